from setuptools import find_packages, setup

with open("README.md", encoding="utf-8") as f:
    long_description = f.read()

setup(
    name="keras-split",
    version="0.1.0",
    description="Grow Keras models by energy-aware splitting steepest descent.",
    long_description=long_description,
    long_description_content_type="text/markdown",
    packages=find_packages(include=["keras_split", "keras_split.*"]),
    python_requires=">=3.10",
    install_requires=[
        "keras>=3.15,<4",
        "numpy>=1.26",
        "scipy>=1.11",
        "scikit-learn>=1.3",
        "tensorboard>=2.16",
        "matplotlib>=3.7",
        "tf-keras-vis>=0.8.7",
        "tensorflow-datasets>=4.9",
    ],
    extras_require={
        # TensorFlow comes as one of two wheels that install the same module: pick one.
        "cpu": ["tensorflow-cpu>=2.16"],
        "gpu": ["tensorflow[and-cuda]>=2.16"],
        "test": ["pytest>=8"],
    },
    entry_points={"console_scripts": ["keras-split=keras_split.apps.cli:main"]},
    classifiers=[
        "Programming Language :: Python :: 3",
        "Framework :: Keras",
        "Topic :: Scientific/Engineering :: Artificial Intelligence",
    ],
)
