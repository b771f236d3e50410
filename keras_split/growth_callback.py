"""`GrowthCallback`: grow inside `model.fit` on a schedule."""

import keras

from keras_split.flops import count_flops


class GrowthCallback(keras.callbacks.Callback):
    """Runs a growth stage every ``every_n_epochs`` epochs until a MACs target.

    Args:
        data: the batches for eigen estimation (see ``GrowingModel.grow``).
        every_n_epochs: grow after every this many epochs (>= 1).
        max_macs: stop growing once the model has this many MACs; the last
            stage's ratio is reduced so as not to pass it. None: no limit.
        max_stages: at most this many stages. None: no limit.
        **grow_kwargs: passed to ``GrowingModel.grow`` (``growth_ratio``,
            ``cost``, ``method``, ...).

    Raises:
        ValueError: for a bad schedule argument.

    Example:
        >>> model.fit(train, epochs=30, callbacks=[
        ...     GrowthCallback(train.take(20), every_n_epochs=10, max_macs=2e6)])
    """

    def __init__(self, data, every_n_epochs=5, max_macs=None, max_stages=None, **grow_kwargs):
        super().__init__()
        if isinstance(every_n_epochs, bool) or not isinstance(every_n_epochs, int) or every_n_epochs < 1:
            raise ValueError(f"every_n_epochs must be a positive integer, got {every_n_epochs!r}.")
        if max_macs is not None and not max_macs > 0:
            raise ValueError(f"max_macs must be positive, got {max_macs!r}.")
        if max_stages is not None and (not isinstance(max_stages, int) or max_stages < 0):
            raise ValueError(f"max_stages must be a non-negative integer, got {max_stages!r}.")
        self.data = data
        self.every_n_epochs = every_n_epochs
        self.max_macs = max_macs
        self.max_stages = max_stages
        self.grow_kwargs = dict(grow_kwargs)
        self.stages = []

    def on_epoch_end(self, epoch, logs=None):
        if (epoch + 1) % self.every_n_epochs:
            return
        if self.max_stages is not None and len(self.stages) >= self.max_stages:
            return
        ratio = self.grow_kwargs.get("growth_ratio", 0.5)
        if self.max_macs is not None:
            macs = count_flops(self.model)
            if macs >= self.max_macs:
                return
            ratio = min(ratio, self.max_macs / macs - 1.0)
        kwargs = dict(self.grow_kwargs, growth_ratio=ratio)
        self.stages.append(self.model.grow(self.data, **kwargs))
