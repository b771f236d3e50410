"""The channel graph: which channels of which layers split together, and how.

A Keras functional model is read once (``walk``: its nodes in execution order)
into a ChannelGraph: producers (Dense, Conv2D units), the per-channel followers
and consumers of each (a handler per layer type, ``handlers``), the groups of
channels that residual Adds, depthwise convolutions and concatenations tie
together, and the activation that closes each neuron (``activations``).
"""
