"""tf.data input pipelines for ImageNet and CIFAR."""

from keras_split.data.cifar import cifar_dataset, load_cifar_arrays
from keras_split.data.detect import detect_dataset
from keras_split.data.image_folder import ImageFolder
from keras_split.data.imagenet import imagenet_dataset

__all__ = ["ImageFolder", "cifar_dataset", "detect_dataset", "imagenet_dataset",
           "load_cifar_arrays"]
