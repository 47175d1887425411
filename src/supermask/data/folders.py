"""Class-per-folder image directories (ImageNet and your own), decoded with Pillow in DataLoader workers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from supermask.data.registry import DATASETS, DatasetInfo
from supermask.errors import DataError


class ImageFolder(torch.utils.data.Dataset):
    """A class-per-folder image directory decoded with Pillow (RGB)."""

    EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif")  # any case: .JPG, .PNG

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
            if p.suffix.lower() in self.EXTENSIONS and p.is_file()
        ]
        if not self.samples:
            raise DataError(f"{root} has no images with extensions {self.EXTENSIONS}")
        empty = sorted(set(self.classes) - {self.classes[i] for _, i in self.samples})
        if empty:  # a class with no example would be a label the model never sees
            raise DataError(
                f"{root}: class folder(s) {empty[:5]} hold no images with extensions {self.EXTENSIONS}; "
                "remove them or add images"
            )
        self.image_size, self.train = image_size, train
        self.mean = torch.tensor(info.mean).view(3, 1, 1)
        self.std = torch.tensor(info.std).view(3, 1, 1)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> tuple[Tensor, int]:
        from PIL import Image

        path, label = self.samples[i]
        try:
            with Image.open(path) as im:
                img = im.convert("RGB")
        except (OSError, ValueError, Image.DecompressionBombError) as exc:  # not an image, truncated, or huge
            raise DataError(f"cannot read image {path}: {exc}; remove or replace the file") from exc
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
    """Train and val DataLoaders of a class-per-folder directory (``train/`` and ``val/`` or ``test/``), and its
    number of classes; the two must have the same classes."""
    if not root:
        raise DataError("an image folder needs data.root=DIR (with train/ and val/, one sub-folder per class)")
    base = Path(root).expanduser()
    info = DATASETS["imagenet"]
    train = ImageFolder(base / "train", image_size, True, info)
    held_out = base / "val" if (base / "val").is_dir() or not (base / "test").is_dir() else base / "test"
    val = ImageFolder(held_out, image_size, False, info)
    if val.classes != train.classes:
        raise DataError(
            f"{held_out} has classes {val.classes[:5]}..., {base / 'train'} has {train.classes[:5]}...: "
            "the held-out split must have the same class folders"
        )
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
