"""File readers: MNIST's IDX files and CIFAR's pickled batches (unpickled safely), md5-checked folders."""

from __future__ import annotations

import gzip
import os
import pickle
from pathlib import Path
from typing import Any

import numpy as np

from supermask.data.download import fetch, files_md5, md5sum, safe_extract
from supermask.data.registry import DATASETS, DatasetInfo, describe
from supermask.errors import DataError


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
    if name not in DATASETS or DATASETS[name].folder:
        raise DataError(
            f"unknown tensor data set {name!r}; choose one of: {', '.join(n for n, i in DATASETS.items() if not i.folder)}"
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
