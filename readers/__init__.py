"""The dataset files, read into uint8 ImageSets: one module per format, each reading the official layout.

    cifar10.py   cifar-10-batches-py/ (the official python batches), downloaded and extracted when missing
    svhn.py      train_32x32.mat, test_32x32.mat, downloaded when missing
    folders.py   image folder trees: CINIC10's, and DIR/{train,test}/<class>/* for a dataset of your own
    digits.py    scikit-learn's handwritten digits (no download)
    download.py  a file fetched with its md5 checked, written atomically
    png.py       uint8 images as PNG bytes and back, exactly (a model file's memory pool)
    common.py    ImageSet and DatasetError

datasets.py names the datasets and holds the paper's protocol (splits, batches, memory sets); this package only
reads files. This file only hands names on.
"""
from .cifar10 import CIFAR10_CLASSES, read_cifar10  # noqa: F401
from .common import DatasetError, ImageSet  # noqa: F401
from .digits import read_digits  # noqa: F401
from .download import download_file  # noqa: F401
from .folders import folder_classes, read_cinic10, read_image_folders  # noqa: F401
from .png import from_png, to_png  # noqa: F401
from .svhn import read_svhn  # noqa: F401
