"""The data sets supermask knows: their shapes, normalisation, sources and checksums."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RemoteFile:
    name: str
    md5: str
    #: md5 of the file gunzipped, where a folder may hold it unpacked (MNIST's raw IDX files)
    unpacked_md5: str | None = None


@dataclass(frozen=True)
class DatasetInfo:
    num_classes: int
    in_channels: int
    image_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    augment: bool  # random crop (padding 4) + horizontal flip while training
    urls: tuple[str, ...] = ()
    files: tuple[RemoteFile, ...] = ()
    note: str = ""
    # md5 of each file read from an unpacked folder: such a folder is read only if every one matches
    members: tuple[RemoteFile, ...] = ()
    # a class-per-folder image directory (data.root with train/ and val/ or test/), read by DataLoader workers
    folder: bool = False
    # torchvision's folder names for this data set (root/NAME/raw holds its files there)
    torchvision_folders: tuple[str, ...] = ()

    @property
    def reads_root(self) -> bool:
        """Whether ``data.root`` means anything to this data set (False: it ships with a package)."""
        return bool(self.files or self.members or self.folder)


_MNIST_FILES = (  # the unpacked md5s: of the gunzipped originals
    RemoteFile("train-images-idx3-ubyte.gz", "f68b3c2dcbeaaa9fbdd348bbdeb94873", "6bbc9ace898e44ae57da46a324031adb"),
    RemoteFile("train-labels-idx1-ubyte.gz", "d53e105ee54ea40749a09fcbcd1e9432", "a25bea736e30d166cdddb491f175f624"),
    RemoteFile("t10k-images-idx3-ubyte.gz", "9fb629c4189551a2d022fa330f9573f3", "2646ac647ad5339dbf082846283269ea"),
    RemoteFile("t10k-labels-idx1-ubyte.gz", "ec29112dd5afa0611ce80d1b7f02629c", "27ae3e4e09519cfbb04c329615203637"),
)
_FASHION_FILES = (
    RemoteFile("train-images-idx3-ubyte.gz", "8d4fb7e6c68d591d4c3dfef9ec88bf0d"),
    RemoteFile("train-labels-idx1-ubyte.gz", "25c81989df183df01b3e8a0aad5dffbe"),
    RemoteFile("t10k-images-idx3-ubyte.gz", "bef4ecab320f06d8554ea6380940ec79"),
    RemoteFile("t10k-labels-idx1-ubyte.gz", "bb300cfdad3c16e7a12a480ee83cd310"),
)
# md5 of each file of the unpacked originals (as published with the data sets, and checked by torchvision)
_CIFAR10_MEMBERS = (
    RemoteFile("data_batch_1", "c99cafc152244af753f735de768cd75f"),
    RemoteFile("data_batch_2", "d4bba439e000b95fd0a9bffe97cbabec"),
    RemoteFile("data_batch_3", "54ebc095f3ab1f0389bbae665268c751"),
    RemoteFile("data_batch_4", "634d18415352ddfa80567beed471001a"),
    RemoteFile("data_batch_5", "482c414d41f54cd18b22e5b47cb7c3cb"),
    RemoteFile("test_batch", "40351d587109b95175f43aff81a1287e"),
)
_CIFAR100_MEMBERS = (
    RemoteFile("train", "16019d7e3df5f24257cddd939b257f8d"),
    RemoteFile("test", "f0ef6b0ae62326f3e7ffdfab6717acfc"),
)
_CIFAR_MEAN, _CIFAR_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)

DATASETS: dict[str, DatasetInfo] = {
    "digits": DatasetInfo(10, 1, 8, (0.3,), (0.37,), False, note="scikit-learn's 8x8 digits, shipped offline"),
    "mnist": DatasetInfo(
        10,
        1,
        28,
        (0.1307,),
        (0.3081,),
        False,
        urls=("https://ossci-datasets.s3.amazonaws.com/mnist/", "http://yann.lecun.com/exdb/mnist/"),
        files=_MNIST_FILES,
        torchvision_folders=("MNIST",),
    ),
    "fashion-mnist": DatasetInfo(
        10,
        1,
        28,
        (0.2860,),
        (0.3530,),
        False,
        urls=("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
        files=_FASHION_FILES,
        torchvision_folders=("FashionMNIST",),
    ),
    "cifar10": DatasetInfo(
        10,
        3,
        32,
        _CIFAR_MEAN,
        _CIFAR_STD,
        True,
        urls=("https://www.cs.toronto.edu/~kriz/",),
        files=(RemoteFile("cifar-10-python.tar.gz", "c58f30108f718f92721af3b95e74349a"),),
        members=_CIFAR10_MEMBERS,
    ),
    "cifar10-jpeg75": DatasetInfo(
        10,
        3,
        32,
        _CIFAR_MEAN,
        _CIFAR_STD,
        True,
        files=(RemoteFile("cifar-10-jpeg75-python.tar.gz", "18a27610ac54addce5a4621da9fab090"),),
        members=(
            RemoteFile("data_batch_1", "2117d7d1552371c4367bf8af462da384"),
            RemoteFile("data_batch_2", "dba61ddb344837aad15ff7e9f85f5b22"),
            RemoteFile("data_batch_3", "a772067ed7898372500e0ef7a2dc5d14"),
            RemoteFile("data_batch_4", "2248efae7c3921c89f6f4af83757d306"),
            RemoteFile("data_batch_5", "f6129cc5e5120204d7bc451ad4219ac9"),
            RemoteFile("test_batch", "53875ae9d2638021ec99841f668f7bb2"),
        ),
        note="CIFAR-10 rebuilt from JPEG quality 75 (lossy pixels, original labels): read from data.root only",
    ),
    "cifar100": DatasetInfo(
        100,
        3,
        32,
        (0.5071, 0.4865, 0.4409),
        (0.2673, 0.2564, 0.2762),
        True,
        urls=("https://www.cs.toronto.edu/~kriz/",),
        files=(RemoteFile("cifar-100-python.tar.gz", "eb9058c3a382ffc7106e4002c42a8d85"),),
        members=_CIFAR100_MEMBERS,
    ),
    "imagenet": DatasetInfo(
        1000,
        3,
        224,
        (0.485, 0.456, 0.406),
        (0.229, 0.224, 0.225),
        True,
        note="a folder with train/ and val/, one sub-folder per class",
        folder=True,
    ),
    "folder": DatasetInfo(
        0,  # from the folder: one class per sub-folder
        3,
        224,  # data.image_size chooses it
        (0.485, 0.456, 0.406),
        (0.229, 0.224, 0.225),
        True,
        note="your own images: data.root with train/ and val/ (or test/), one sub-folder per class",
        folder=True,
    ),
}
DATASET_NAMES = tuple(DATASETS)


def describe(name: str) -> str:
    """How a data set must be labelled in reports."""
    return "CIFAR-10 (JPEG-75 rebuild)" if name == "cifar10-jpeg75" else name
