"""Tests of supermask.data.tensors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from supermask import data
from supermask.data import DataError


def test_tensor_loader_batches_augmentation_and_ranks() -> None:
    info = data.DATASETS["cifar10"]
    x = torch.randint(0, 256, (100, 3, 32, 32), dtype=torch.uint8)
    y = torch.arange(100)
    loader = data.TensorLoader(x, y, info, 32, train=True, seed=1)
    batches = list(loader)
    assert [len(b[1]) for b in batches] == [32, 32, 32, 4]
    assert sorted(torch.cat([b[1] for b in batches]).tolist()) == list(range(100))
    assert batches[0][0].dtype == torch.float32 and batches[0][0].shape == (32, 3, 32, 32)
    again = list(data.TensorLoader(x, y, info, 32, train=True, seed=1))
    assert torch.equal(again[0][0], batches[0][0])  # seeded: the same on resume
    ranks = [
        torch.cat([b[1] for b in data.TensorLoader(x, y, info, 16, train=True, seed=1, rank=r, world_size=2)])
        for r in (0, 1)
    ]
    assert len(ranks[0]) == len(ranks[1]) == 50 and not set(ranks[0].tolist()) & set(ranks[1].tolist())


def test_per_image_standardization_is_tensorflows() -> None:
    info = data.DATASETS["mnist"]
    x = torch.randint(0, 256, (5, 1, 28, 28), dtype=torch.uint8)
    x[4] = 7  # a blank image: its std is 0, TensorFlow divides by 1 / sqrt(pixels) instead
    ((batch, _),) = data.TensorLoader(x, torch.arange(5), info, 8, train=False, standardize="per_image")
    pixels = x.double().flatten(1).numpy()
    std = np.maximum(pixels.std(axis=1, keepdims=True), 1 / np.sqrt(784))  # tf.image.per_image_standardization
    expected = (pixels - pixels.mean(axis=1, keepdims=True)) / std
    assert np.allclose(batch.flatten(1).double().numpy(), expected, atol=1e-5)
    assert torch.equal(batch[4], torch.zeros_like(batch[4]))
    ((dataset_mean, _),) = data.TensorLoader(x, torch.arange(5), info, 8, train=False)
    assert not torch.allclose(dataset_mean, batch)  # the default: the data set's own mean and std
    ((unit, _),) = data.TensorLoader(x, torch.arange(5), info, 8, train=False, standardize="unit")
    assert torch.equal(unit, x.float() / 255)  # pixels in [0, 1], nothing subtracted
    assert float(unit.min()) >= 0 and float(unit.max()) <= 1
    with pytest.raises(ValueError, match="standardize='whitened'"):
        data.TensorLoader(x, torch.arange(5), info, 8, train=False, standardize="whitened")


def test_unshuffled_training_keeps_the_files_order_every_epoch() -> None:
    info = data.DATASETS["mnist"]
    x, y = torch.zeros(10, 1, 28, 28, dtype=torch.uint8), torch.arange(10)
    loader = data.TensorLoader(x, y, info, 4, train=True, seed=3, shuffle=False)
    for epoch in (0, 1):
        loader.set_epoch(epoch)
        assert torch.cat([b[1] for b in loader]).tolist() == list(range(10))
    shuffled = data.TensorLoader(x, y, info, 4, train=True, seed=3)
    assert torch.cat([b[1] for b in shuffled]).tolist() != list(range(10))


def test_the_first_training_examples_only(shared_data: Path) -> None:
    train, test, _ = data.build_tensor_loaders(
        "mnist", str(shared_data / "mnist"), 1000, "cpu", 0, train_examples=55_000, shuffle=False
    )
    assert len(train) == 55 and len(test) == 10
    assert torch.cat([b[1] for b in train]).tolist()[:5] == [5, 0, 4, 1, 9]
    with pytest.raises(DataError, match="train_examples=60001: the training set holds only 60000"):
        data.build_tensor_loaders("mnist", str(shared_data / "mnist"), 1000, "cpu", 0, train_examples=60_001)


def test_random_crop_flip_is_a_crop_of_the_padded_image() -> None:
    x = torch.arange(2 * 1 * 6 * 6, dtype=torch.float32).reshape(2, 1, 6, 6)
    gen = torch.Generator().manual_seed(0)
    out = data.random_crop_flip(x, gen, padding=2)
    padded = torch.nn.functional.pad(x, (2,) * 4)
    for i in range(2):
        found = any(
            torch.equal(out[i], padded[i, :, r : r + 6, c : c + 6])
            or torch.equal(out[i], padded[i, :, r : r + 6, c : c + 6].flip(-1))
            for r in range(5)
            for c in range(5)
        )
        assert found


def test_augmentation_follows_the_data_set_unless_set() -> None:
    info = data.DATASETS["cifar10"]
    x, y = torch.randint(0, 256, (8, 3, 32, 32), dtype=torch.uint8), torch.arange(8)
    plain = (x.float() - torch.tensor(info.mean).view(1, 3, 1, 1) * 255) / (
        torch.tensor(info.std).view(1, 3, 1, 1) * 255
    )
    ((off, labels),) = data.TensorLoader(x, y, info, 8, train=True, seed=1, shuffle=False, augment=False)
    assert torch.allclose(off, plain[labels])  # exactly the images, standardised
    ((standard, labels),) = data.TensorLoader(x, y, info, 8, train=True, seed=1, shuffle=False)
    assert not torch.allclose(standard, plain[labels])  # CIFAR's standard: random crops and flips
