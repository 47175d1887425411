"""Small data sets held whole on the training device as uint8 tensors, with batched augmentation."""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
import torch
from torch import Tensor

from supermask.data.readers import load_arrays
from supermask.data.registry import DATASETS, DatasetInfo
from supermask.errors import DataError

#: how pixels are standardised: ``dataset`` (the data set's per-channel mean and std, the PyTorch
#: convention), ``per_image`` (each image to mean 0 and std 1 over all its pixels, as TensorFlow's
#: ``per_image_standardization``: (x - mean) / max(std, 1 / sqrt(pixels))) or ``unit`` (pixel values
#: scaled to [0, 1], nothing subtracted, as Zhou et al.'s code feeds MNIST)
STANDARDIZE_MODES = ("dataset", "per_image", "unit")


class TensorLoader:
    """Batches of a data set held on ``device`` as uint8, with batched crop/flip and standardisation.

    Each epoch draws one seeded permutation (``shuffle=False``: the data set's own order, every epoch);
    with ``world_size > 1`` each rank takes its slice of it (``perm[rank::world_size]``, trimmed to
    equal length), so ranks see disjoint data.
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
        standardize: str = "dataset",
        shuffle: bool = True,
    ) -> None:
        if standardize not in STANDARDIZE_MODES:
            raise ValueError(f"standardize={standardize!r}: choose one of {', '.join(STANDARDIZE_MODES)}")
        self.x = torch.as_tensor(np.array(x) if isinstance(x, np.ndarray) else x).to(device)
        self.y = torch.as_tensor(np.array(y) if isinstance(y, np.ndarray) else y).to(device)
        self.device = torch.device(device)
        self.batch_size = batch_size
        self.train = train
        self.augment = info.augment if augment is None else augment
        self.seed, self.rank, self.world_size = seed, rank, world_size
        self.standardize, self.shuffle = standardize, shuffle
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
        if self.train and self.shuffle:
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
            yield self._standardized(x), self.y[idx]

    def _standardized(self, x: Tensor) -> Tensor:
        if self.standardize == "unit":
            return x.float() / 255.0
        if self.standardize == "per_image":
            flat = x.float().flatten(1)
            floor = 1.0 / math.sqrt(flat.shape[1])  # TensorFlow's: a blank image is not divided by 0
            std = flat.std(dim=1, unbiased=False, keepdim=True).clamp_min(floor)
            return ((flat - flat.mean(dim=1, keepdim=True)) / std).view(x.shape)
        return (x.float() - self.mean) / self.std


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


def select_classes(x: np.ndarray, y: np.ndarray, classes: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """The examples of ``classes`` only, their labels renumbered to the position of their class in the list."""
    relabel = np.full(int(y.max()) + 1, -1, dtype=np.int64)
    relabel[np.asarray(classes)] = np.arange(len(classes))
    keep = np.isin(y, classes)
    return x[keep], relabel[y[keep]]


def build_tensor_loaders(
    name: str,
    root: str | None,
    batch_size: int,
    device: torch.device | str,
    seed: int,
    rank: int = 0,
    world_size: int = 1,
    eval_batch_size: int = 1000,
    classes: list[int] | None = None,
    *,
    standardize: str = "dataset",
    shuffle: bool = True,
    train_examples: int | None = None,
    augment: bool | None = None,
) -> tuple[TensorLoader, TensorLoader, DatasetInfo]:
    """Train and test loaders of a small data set; ``classes``: only these, relabelled 0..n-1 in this
    order; ``train_examples``: only the first so many training examples (e.g. 55,000 of MNIST's 60,000,
    the split of TensorFlow's tutorials); ``augment``: random crop and flip while training (``None``: the
    data set's standard, on for CIFAR); ``standardize`` and ``shuffle``: see :class:`TensorLoader`."""
    arrays = load_arrays(name, root)
    info = DATASETS[name]
    if classes is not None:
        arrays = {split: select_classes(x, y, classes) for split, (x, y) in arrays.items()}
    arrays["train"] = first_examples(*arrays["train"], train_examples)
    train = TensorLoader(
        *arrays["train"],
        info,
        batch_size,
        train=True,
        device=device,
        seed=seed,
        rank=rank,
        world_size=world_size,
        standardize=standardize,
        shuffle=shuffle,
        augment=augment,
    )
    test = TensorLoader(
        *arrays["test"], info, eval_batch_size, train=False, device=device, seed=seed, standardize=standardize
    )
    return train, test, info


def first_examples(x: np.ndarray, y: np.ndarray, count: int | None) -> tuple[np.ndarray, np.ndarray]:
    """The first ``count`` examples (all: ``None``); more than there are is an error, never fewer silently."""
    if count is None:
        return x, y
    if count > len(y):
        raise DataError(f"data.train_examples={count}: the training set holds only {len(y)} examples")
    return x[:count], y[:count]


# --- ImageNet-style folders ------------------------------------------------------------------
