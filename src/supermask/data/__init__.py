"""Data sets: small ones as tensors on the training device with batched augmentation, image folders
through DataLoader workers.

Small data sets (digits, MNIST, Fashion-MNIST, CIFAR-10/100, the CIFAR-10 JPEG-75 rebuild) are held
whole as uint8 tensors on the device; a batch is cropped, flipped and normalised in one vectorised step
(no per-image DataLoader). Class-per-folder image directories (ImageNet, or your own with
``data.name=folder``) are decoded with Pillow in DataLoader worker processes.

Files are read from ``root`` or downloaded from their canonical source with md5 checks (a file is
written to a temporary name and renamed only once its md5 matches; archives are extracted only if no
member could write outside the target folder), and a data set is only accepted under its own name.

The parts: :mod:`~supermask.data.registry` (what each data set is), :mod:`~supermask.data.download`
(downloads and archive safety), :mod:`~supermask.data.readers` (file readers), :mod:`~supermask.data.tensors`
and :mod:`~supermask.data.folders` (the loaders).
"""

from supermask.data.download import download, safe_extract
from supermask.data.folders import ImageFolder, build_folder_loaders
from supermask.data.readers import _load_cifar_batch, default_root, load_arrays, read_idx
from supermask.data.registry import DATASET_NAMES, DATASETS, DatasetInfo, RemoteFile, describe
from supermask.data.tensors import (
    STANDARDIZE_MODES,
    TensorLoader,
    build_tensor_loaders,
    first_examples,
    random_crop_flip,
)
from supermask.errors import DataError

__all__ = [
    "DATASETS",
    "DATASET_NAMES",
    "DataError",
    "DatasetInfo",
    "STANDARDIZE_MODES",
    "ImageFolder",
    "RemoteFile",
    "TensorLoader",
    "_load_cifar_batch",
    "build_folder_loaders",
    "build_tensor_loaders",
    "default_root",
    "describe",
    "download",
    "first_examples",
    "load_arrays",
    "random_crop_flip",
    "read_idx",
    "safe_extract",
]
