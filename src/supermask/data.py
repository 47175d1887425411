"""Data sets as tensors on the training device, with batched augmentation.

Small data sets (digits, MNIST, Fashion-MNIST, CIFAR-10/100) are held whole as uint8 tensors on
the device; a batch is cropped, flipped and normalised in one vectorised step (no per-image
DataLoader). ImageNet-style folders are decoded with Pillow in DataLoader worker processes.

Files are read from ``root`` or downloaded from their canonical source with md5 checks: a file is
written to a temporary name and renamed only once its md5 matches, and archives are extracted
only if no member could write outside the target folder.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import pickle
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from supermask.errors import DataError
from supermask.fileio import atomic_writer, make_dirs


@dataclass(frozen=True)
class RemoteFile:
    name: str
    md5: str


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


_MNIST_FILES = (
    RemoteFile("train-images-idx3-ubyte.gz", "f68b3c2dcbeaaa9fbdd348bbdeb94873"),
    RemoteFile("train-labels-idx1-ubyte.gz", "d53e105ee54ea40749a09fcbcd1e9432"),
    RemoteFile("t10k-images-idx3-ubyte.gz", "9fb629c4189551a2d022fa330f9573f3"),
    RemoteFile("t10k-labels-idx1-ubyte.gz", "ec29112dd5afa0611ce80d1b7f02629c"),
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
    ),
}
DATASET_NAMES = tuple(DATASETS)


def md5sum(path: Path) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def download(url: str, dest: Path, md5: str, timeout: float = 30.0) -> Path:
    """Download ``url`` to ``dest`` atomically (with the user's umask), keeping it only if its md5 matches."""
    make_dirs(dest.parent)
    hint = f"If this machine is offline, put the file in the data root ({dest.parent}) yourself"
    try:
        response = urllib.request.urlopen(url, timeout=timeout)
    except (urllib.error.URLError, OSError, TimeoutError) as exc:
        raise DataError(f"cannot download {url}: {exc}. {hint}") from exc
    digest = hashlib.md5()
    with response, atomic_writer(dest, fsync=False) as out:  # removed unless the md5 matches
        while True:
            try:
                chunk = response.read(1 << 20)
            except (OSError, TimeoutError) as exc:  # a network error, not a disk error
                raise DataError(f"cannot download {url}: {exc}. {hint}") from exc
            if not chunk:
                break
            digest.update(chunk)
            out.write(chunk)
        if digest.hexdigest() != md5:
            raise DataError(
                f"downloaded {url} has md5 {digest.hexdigest()}, expected {md5}: the file is corrupt or not the "
                "expected one, so it was discarded"
            )
    return dest


def fetch(name: str, root: Path, info: DatasetInfo) -> dict[str, Path]:
    """Paths of the data set's files, found in ``root`` or ``root/name`` or downloaded (md5-checked)."""
    found: dict[str, Path] = {}
    for remote in info.files:
        candidates = [root / remote.name, root / name / remote.name]
        path = next((p for p in candidates if p.is_file()), None)
        if path is None:
            if not info.urls:
                raise DataError(
                    f"{name}: {remote.name} is not in {root} (or {root / name}) and this data set has "
                    f"no download source ({info.note}). Set data.root to the folder that holds it"
                )
            errors = []
            for base in info.urls:
                try:
                    path = download(base + remote.name, root / name / remote.name, remote.md5)
                    break
                except DataError as exc:
                    errors.append(str(exc))
            if path is None:
                raise DataError(f"{name}: could not get {remote.name}: " + " | ".join(errors))
        elif md5sum(path) != remote.md5:
            raise DataError(
                f"{path} has the wrong md5 (expected {remote.md5} for {name}); it is corrupt or a "
                "different variant of the data set. Delete it to download it again"
            )
        found[remote.name] = path
    return found


def files_md5(info: DatasetInfo) -> str:
    """A short tag of the expected archive md5, so two variants never share an extracted folder."""
    return info.files[0].md5[:8]


def safe_extract(archive: Path, target: Path) -> None:
    """Extract a tar archive into ``target``, refusing members that would land outside it or links."""
    target = target.resolve()
    with tarfile.open(archive) as tar:
        members = tar.getmembers()
        for m in members:
            dest = (target / m.name).resolve()
            if not (dest == target or target in dest.parents):
                raise DataError(f"{archive}: member {m.name!r} would be written outside {target}; refusing to extract")
            if not (m.isfile() or m.isdir()):
                raise DataError(f"{archive}: member {m.name!r} is a link or special file; refusing to extract")
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}."))
        try:
            tar.extractall(tmp, members=members, filter="data")
            target.mkdir(parents=True, exist_ok=True)
            for child in tmp.iterdir():
                dest = target / child.name
                if dest.exists():
                    shutil.rmtree(dest) if dest.is_dir() else dest.unlink()
                os.replace(child, dest)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (optionally gzipped), as MNIST ships them."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError) as exc:
        raise DataError(f"{path} is corrupt: {exc}") from exc
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 8:
        raise DataError(f"{path} is not an IDX file of unsigned bytes")
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    body = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(dims)):
        raise DataError(f"{path} is truncated: {body.size} bytes of data, expected {int(np.prod(dims))}")
    return body.reshape(dims)


class _SafeUnpickler(pickle.Unpickler):
    """Unpickles only what CIFAR batches hold (dicts, lists, strings, numpy arrays)."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("builtins", "bytes"),
    }

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise DataError(f"refusing to unpickle {module}.{name}: a CIFAR batch holds only arrays and lists")


def _load_cifar_batch(path: Path, label_key: str) -> tuple[np.ndarray, np.ndarray]:
    with open(path, "rb") as f:
        batch = _SafeUnpickler(f, encoding="bytes").load()
    batch = {k.decode() if isinstance(k, bytes) else k: v for k, v in batch.items()}
    x = np.asarray(batch["data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
    return x, np.asarray(batch[label_key], dtype=np.int64)


def load_arrays(name: str, root: str | os.PathLike[str] | None) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``{"train": (x uint8 NCHW, y int64), "test": (...)}`` for a small data set."""
    if name not in DATASETS or name == "imagenet":
        raise DataError(
            f"unknown tensor data set {name!r}; choose one of: {', '.join(n for n in DATASETS if n != 'imagenet')}"
        )
    info = DATASETS[name]
    if name == "digits":
        from sklearn.datasets import load_digits

        d = load_digits()
        x = np.round(d.images * (255.0 / 16.0)).astype(np.uint8)[:, None]
        y = d.target.astype(np.int64)
        order = np.random.default_rng(0).permutation(len(y))  # a fixed split, whatever the run's seed
        cut = int(0.8 * len(y))
        return {"train": (x[order[:cut]], y[order[:cut]]), "test": (x[order[cut:]], y[order[cut:]])}
    base = Path(root).expanduser() if root else default_root()
    unpacked = _UNPACKED.get(name)
    if unpacked and root and (base / unpacked).is_dir():  # the standard unpacked folder, as torchvision leaves it
        return _read_cifar_folder(name, base / unpacked)
    files = fetch(name, base, info)
    if name in ("mnist", "fashion-mnist"):
        f = {k.split("-")[0]: v for k, v in files.items() if "images" in k}
        lab = {k.split("-")[0]: v for k, v in files.items() if "labels" in k}
        return {
            "train": (read_idx(f["train"])[:, None], read_idx(lab["train"]).astype(np.int64)),
            "test": (read_idx(f["t10k"])[:, None], read_idx(lab["t10k"]).astype(np.int64)),
        }
    archive = next(iter(files.values()))
    # Extracted into our cache, never beside the archive (data.root may be shared or read-only).
    folder = default_root() / name / f"{archive.name.replace('.tar.gz', '')}-{files_md5(info)}-extracted"
    if not folder.is_dir():
        safe_extract(archive, folder)
    inner = next((p for p in folder.iterdir() if p.is_dir()), None)
    if inner is None:
        raise DataError(f"{archive} did not contain a batches folder")
    return _read_cifar_folder(name, inner)


# Unpacked folders. Each is read only after every file it is read from matches its md5
# (DatasetInfo.members), so one variant can never pass for another (the JPEG-75 rebuild for CIFAR-10,
# or the reverse), whoever unpacked the folder.
_UNPACKED = {"cifar10": "cifar-10-batches-py", "cifar100": "cifar-100-python", "cifar10-jpeg75": "cifar-10-batches-py"}


def check_members(name: str, folder: Path, info: DatasetInfo) -> None:
    """Raise :class:`DataError` unless every file of ``info.members`` is in ``folder`` with its md5;
    when a file is that of another known data set, the error names it."""
    if not info.members:
        raise DataError(f"{name}: no checksums are known for its unpacked files, so its folder cannot be trusted")
    for member in info.members:
        path = folder / member.name
        if not path.is_file():
            raise DataError(f"{folder} is not a complete {describe(name)} folder: {member.name} is missing")
        got = md5sum(path)
        if got != member.md5:
            other = next((n for n, i in DATASETS.items() for m in i.members if m.md5 == got), None)
            what = f"it is {describe(other)} (use data.name={other})" if other else "it is corrupt or another variant"
            raise DataError(f"{path} has md5 {got}, expected {member.md5} for {describe(name)}: {what}")


def _read_cifar_folder(name: str, inner: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    check_members(name, inner, DATASETS[name])
    if name == "cifar100":
        return {s: _load_cifar_batch(inner / s, "fine_labels") for s in ("train", "test")}
    train = [_load_cifar_batch(inner / f"data_batch_{i}", "labels") for i in range(1, 6)]
    return {
        "train": (np.concatenate([t[0] for t in train]), np.concatenate([t[1] for t in train])),
        "test": _load_cifar_batch(inner / "test_batch", "labels"),
    }


def default_root() -> Path:
    """``$SUPERMASK_DATA`` or ``~/.cache/supermask/data``."""
    return Path(os.environ.get("SUPERMASK_DATA", "~/.cache/supermask/data")).expanduser()


class TensorLoader:
    """Batches of a data set held on ``device`` as uint8, with batched crop/flip and normalisation.

    Each epoch draws one seeded permutation; with ``world_size > 1`` each rank takes its slice of
    it (``perm[rank::world_size]``, trimmed to equal length), so ranks see disjoint data.
    """

    def __init__(
        self,
        x: np.ndarray | Tensor,
        y: np.ndarray | Tensor,
        info: DatasetInfo,
        batch_size: int,
        *,
        train: bool,
        device: torch.device | str = "cpu",
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        augment: bool | None = None,
    ) -> None:
        self.x = torch.as_tensor(np.array(x) if isinstance(x, np.ndarray) else x).to(device)
        self.y = torch.as_tensor(np.array(y) if isinstance(y, np.ndarray) else y).to(device)
        self.device = torch.device(device)
        self.batch_size = batch_size
        self.train = train
        self.augment = info.augment if augment is None else augment
        self.seed, self.rank, self.world_size = seed, rank, world_size
        shape = (1, -1, 1, 1)
        self.mean = torch.tensor(info.mean, device=self.device).view(shape) * 255.0
        self.std = torch.tensor(info.std, device=self.device).view(shape) * 255.0
        self.epoch = 0

    def __len__(self) -> int:
        n = len(self.y) // self.world_size
        return -(-n // self.batch_size)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _indices(self, gen: torch.Generator) -> Tensor:
        n = len(self.y)
        if self.train:
            order = torch.randperm(n, generator=gen, device="cpu").to(self.device)
        else:
            order = torch.arange(n, device=self.device)
        if self.world_size > 1:
            per_rank = n // self.world_size
            order = order[self.rank :: self.world_size][:per_rank]
        return order

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        gen = torch.Generator(device="cpu").manual_seed(self.seed * 100003 + self.epoch)
        order = self._indices(gen)
        for start in range(0, len(order), self.batch_size):
            idx = order[start : start + self.batch_size]
            x = self.x[idx]
            if self.train and self.augment:
                x = random_crop_flip(x, gen)
            yield (x.float() - self.mean) / self.std, self.y[idx]


def random_crop_flip(x: Tensor, gen: torch.Generator, padding: int = 4) -> Tensor:
    """Random crop with zero padding and random horizontal flip, for a whole NCHW batch at once."""
    b, c, h, w = x.shape
    shifts = torch.randint(0, 2 * padding + 1, (2, b), generator=gen).to(x.device)
    flips = (torch.rand(b, generator=gen) < 0.5).to(x.device)
    padded = torch.nn.functional.pad(x, (padding,) * 4)
    rows = (shifts[0, :, None] + torch.arange(h, device=x.device))[:, None, :, None]
    cols = shifts[1, :, None] + torch.arange(w, device=x.device)
    cols = torch.where(flips[:, None], cols.flip(1), cols)[:, None, None, :]
    batch = torch.arange(b, device=x.device)[:, None, None, None]
    chan = torch.arange(c, device=x.device)[None, :, None, None]
    return padded[batch, chan, rows, cols]


def build_tensor_loaders(
    name: str,
    root: str | None,
    batch_size: int,
    device: torch.device | str,
    seed: int,
    rank: int = 0,
    world_size: int = 1,
    eval_batch_size: int = 1000,
) -> tuple[TensorLoader, TensorLoader, DatasetInfo]:
    """Train and test loaders of a small data set."""
    arrays = load_arrays(name, root)
    info = DATASETS[name]
    train = TensorLoader(
        *arrays["train"], info, batch_size, train=True, device=device, seed=seed, rank=rank, world_size=world_size
    )
    test = TensorLoader(*arrays["test"], info, eval_batch_size, train=False, device=device, seed=seed)
    return train, test, info


# --- ImageNet-style folders ------------------------------------------------------------------


class ImageFolder(torch.utils.data.Dataset):
    """A class-per-folder image directory decoded with Pillow (RGB)."""

    EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".JPEG")

    def __init__(self, root: Path, image_size: int, train: bool, info: DatasetInfo) -> None:
        if not root.is_dir():
            raise DataError(f"{root} does not exist: an ImageNet-style folder needs train/ and val/ sub-folders")
        self.classes = sorted(p.name for p in root.iterdir() if p.is_dir())
        if not self.classes:
            raise DataError(f"{root} has no class sub-folders")
        self.samples = [
            (p, i)
            for i, c in enumerate(self.classes)
            for p in sorted((root / c).iterdir())
            if p.suffix in self.EXTENSIONS
        ]
        if not self.samples:
            raise DataError(f"{root} has no images with extensions {self.EXTENSIONS}")
        self.image_size, self.train = image_size, train
        self.mean = torch.tensor(info.mean).view(3, 1, 1)
        self.std = torch.tensor(info.std).view(3, 1, 1)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> tuple[Tensor, int]:
        from PIL import Image

        path, label = self.samples[i]
        with Image.open(path) as im:
            img = im.convert("RGB")
        s = self.image_size
        if self.train:  # random-resized-crop (scale 0.08..1) and flip
            w, h = img.size
            area = w * h * float(np.random.uniform(0.08, 1.0))
            ratio = float(np.exp(np.random.uniform(np.log(3 / 4), np.log(4 / 3))))
            cw = int(min(w, round((area * ratio) ** 0.5)))
            ch = int(min(h, round((area / ratio) ** 0.5)))
            left = np.random.randint(0, w - cw + 1)
            top = np.random.randint(0, h - ch + 1)
            img = img.resize((s, s), Image.Resampling.BILINEAR, box=(left, top, left + cw, top + ch))
            if np.random.rand() < 0.5:
                img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        else:  # resize the short side to s/0.875, center crop s
            w, h = img.size
            short = round(s / 0.875)
            scale = short / min(w, h)
            img = img.resize((max(s, round(w * scale)), max(s, round(h * scale))), Image.Resampling.BILINEAR)
            w, h = img.size
            left, top = (w - s) // 2, (h - s) // 2
            img = img.crop((left, top, left + s, top + s))
        x = torch.from_numpy(np.asarray(img, dtype=np.uint8).copy()).permute(2, 0, 1).float() / 255.0
        return (x - self.mean) / self.std, label


def build_folder_loaders(
    root: str | None,
    image_size: int,
    batch_size: int,
    workers: int,
    seed: int,
    rank: int = 0,
    world_size: int = 1,
) -> tuple[Any, Any, DatasetInfo, int]:
    """Train and val DataLoaders of an ImageNet-style folder, and its number of classes."""
    if not root:
        raise DataError("imagenet needs data.root=DIR (a folder with train/ and val/, one sub-folder per class)")
    base = Path(root).expanduser()
    info = DATASETS["imagenet"]
    train = ImageFolder(base / "train", image_size, True, info)
    val = ImageFolder(base / "val", image_size, False, info)
    sampler: Any = None
    if world_size > 1:
        sampler = torch.utils.data.DistributedSampler(train, world_size, rank, shuffle=True, seed=seed)
    g = torch.Generator().manual_seed(seed)
    train_loader = torch.utils.data.DataLoader(
        train,
        batch_size,
        shuffle=sampler is None,
        sampler=sampler,
        num_workers=workers,
        generator=g,
        drop_last=True,
        persistent_workers=workers > 0,
    )
    val_loader = torch.utils.data.DataLoader(val, batch_size, shuffle=False, num_workers=workers)
    return train_loader, val_loader, info, len(train.classes)


def describe(name: str) -> str:
    """How a data set must be labelled in reports."""
    return "CIFAR-10 (JPEG-75 rebuild)" if name == "cifar10-jpeg75" else name


__all__ = [
    "DATASETS",
    "DATASET_NAMES",
    "DataError",
    "TensorLoader",
    "build_folder_loaders",
    "build_tensor_loaders",
    "describe",
    "download",
    "load_arrays",
    "random_crop_flip",
    "safe_extract",
]
