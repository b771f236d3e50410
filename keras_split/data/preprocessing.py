"""Image preprocessing for ImageNet and CIFAR training and evaluation."""

import tensorflow as tf

IMAGENET_MEAN = (0.485 * 255, 0.456 * 255, 0.406 * 255)
IMAGENET_STD = (0.229 * 255, 0.224 * 255, 0.225 * 255)
CIFAR_MEAN = (0.4914 * 255, 0.4822 * 255, 0.4465 * 255)
CIFAR_STD = (0.2470 * 255, 0.2435 * 255, 0.2616 * 255)


def decode(encoded):
    """Any JPEG/PNG/BMP/GIF bytes to a uint8 ``[h, w, 3]`` image."""
    image = tf.io.decode_image(encoded, channels=3, expand_animations=False)
    image.set_shape([None, None, 3])
    return image


def normalize(image, mean, std):
    """``(image - mean) / std`` per channel, float32."""
    image = tf.cast(image, tf.float32)
    return (image - tf.constant(mean)) / tf.constant(std)


def random_resized_crop(image, size, seed, area=(0.08, 1.0), ratio=(3 / 4, 4 / 3)):
    """Inception-style crop: a random box of 8-100 % of the area, aspect 3:4-4:3, resized.

    ``seed`` is a stateless seed (int ``[2]``), so that a seeded pipeline repeats.
    """
    box_begin, box_size, _ = tf.image.stateless_sample_distorted_bounding_box(
        tf.shape(image), bounding_boxes=tf.constant([[[0.0, 0.0, 1.0, 1.0]]]), seed=seed,
        min_object_covered=0.0, aspect_ratio_range=ratio, area_range=area,
        max_attempts=10, use_image_if_no_bounding_boxes=True,
    )
    crop = tf.slice(image, box_begin, box_size)
    return tf.image.resize(crop, [size, size], method="bilinear")


def center_crop(image, size, fraction=0.875):
    """Evaluation crop: the central ``fraction`` of the image, resized to ``size``."""
    shape = tf.shape(image)
    h, w = shape[0], shape[1]
    side = tf.cast(tf.cast(tf.minimum(h, w), tf.float32) * fraction, tf.int32)
    top, left = (h - side) // 2, (w - side) // 2
    crop = tf.slice(image, [top, left, 0], [side, side, 3])
    return tf.image.resize(crop, [size, size], method="bilinear")


def imagenet_train(image, size, seed):
    """Random-resized crop and flip (stateless ``seed``, int ``[2]``), normalised."""
    crop_seed, flip_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    image = random_resized_crop(image, size, crop_seed)
    image = tf.image.stateless_random_flip_left_right(image, seed=flip_seed)
    return normalize(image, IMAGENET_MEAN, IMAGENET_STD)


def imagenet_eval(image, size):
    return normalize(center_crop(image, size), IMAGENET_MEAN, IMAGENET_STD)


def cifar_train(image, seed):
    """Pad by 4 (reflect), random 32x32 crop, random flip (stateless ``seed``, int ``[2]``)."""
    crop_seed, flip_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    image = tf.pad(image, [[4, 4], [4, 4], [0, 0]], mode="REFLECT")
    image = tf.image.stateless_random_crop(image, [32, 32, 3], seed=crop_seed)
    image = tf.image.stateless_random_flip_left_right(image, seed=flip_seed)
    return normalize(image, CIFAR_MEAN, CIFAR_STD)


def cifar_eval(image):
    return normalize(image, CIFAR_MEAN, CIFAR_STD)
