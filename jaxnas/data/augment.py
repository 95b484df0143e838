"""Seeded augmentation of uint8 image batches (crop, flip, cutout) and normalisation."""

from __future__ import annotations

import dataclasses
from typing import Mapping, Sequence

import numpy as np


@dataclasses.dataclass(frozen=True)
class Augment:
    """Training augmentation, applied in DARTS' order.

    1. random crop: zero-pad by `crop_padding` pixels on every side, then take a
       window of the original size at a uniformly random offset (0 = off);
    2. horizontal flip with probability 1/2 (`flip`);
    3. normalisation `(x / 255 - mean) / std`;
    4. cutout (`cutout` = side length L, 0 = off): a centre (y, x) uniform over the
       image, rows `[y - L // 2, y - L // 2 + L)` and columns likewise, clipped to
       the image, set to 0 after normalisation, as DARTS' Cutout (which zeroes the
       normalised tensor; same square as DARTS for even L).
    """

    crop_padding: int = 0
    flip: bool = False
    cutout: int = 0

    def __post_init__(self) -> None:
        if self.crop_padding < 0 or self.cutout < 0:
            raise ValueError(f"crop_padding and cutout must be >= 0, got {self}")


def sample_augment(rng: np.random.Generator, n: int, height: int, width: int,
                   augment: Augment) -> dict[str, np.ndarray]:
    """Draws the random parameters for `n` images: `offset`, `flip`, `centre`."""
    params = {}
    if augment.crop_padding:
        params["offset"] = rng.integers(0, 2 * augment.crop_padding + 1, size=(n, 2))
    if augment.flip:
        params["flip"] = rng.random(n) < 0.5
    if augment.cutout:
        params["centre"] = np.stack(
            [rng.integers(0, height, size=n), rng.integers(0, width, size=n)], 1)
    return params


def random_crop(images: np.ndarray, offsets: np.ndarray, padding: int) -> np.ndarray:
    """Crops image i of the zero-padded batch at `offsets[i] = (dy, dx)`."""
    n, h, w, _ = images.shape
    p = padding
    padded = np.pad(images, ((0, 0), (p, p), (p, p), (0, 0)))
    rows = offsets[:, 0, None] + np.arange(h)  # [n, h]
    cols = offsets[:, 1, None] + np.arange(w)  # [n, w]
    return padded[np.arange(n)[:, None, None], rows[:, :, None], cols[:, None, :]]


def horizontal_flip(images: np.ndarray, flip: np.ndarray) -> np.ndarray:
    """Mirrors left-right the images where `flip` is true."""
    return np.where(flip[:, None, None, None], images[:, :, ::-1], images)


def normalize(images: np.ndarray, mean: Sequence[float],
              std: Sequence[float]) -> np.ndarray:
    """`(images / 255 - mean) / std` per channel, as float32."""
    mean = np.asarray(mean, np.float32)
    std = np.asarray(std, np.float32)
    return (images.astype(np.float32) / np.float32(255.0) - mean) / std


def cutout(images: np.ndarray, centres: np.ndarray, length: int) -> np.ndarray:
    """Returns a copy with an L x L square (clipped) around each centre set to 0."""
    _, h, w, _ = images.shape
    top = centres[:, 0, None] - length // 2
    left = centres[:, 1, None] - length // 2
    ys, xs = np.arange(h), np.arange(w)
    in_rows = (ys >= top) & (ys < top + length)  # [n, h]
    in_cols = (xs >= left) & (xs < left + length)  # [n, w]
    hole = in_rows[:, :, None] & in_cols[:, None, :]
    return np.where(hole[..., None], np.zeros((), images.dtype), images)


def apply_augment(images: np.ndarray, params: Mapping[str, np.ndarray],
                  augment: Augment, mean: Sequence[float],
                  std: Sequence[float]) -> np.ndarray:
    """Augments uint8 images with drawn `params` and normalises them (float32)."""
    if "offset" in params:
        images = random_crop(images, params["offset"], augment.crop_padding)
    if "flip" in params:
        images = horizontal_flip(images, params["flip"])
    out = normalize(images, mean, std)
    if "centre" in params:
        out = cutout(out, params["centre"], augment.cutout)
    return out


def augment_batch(images: np.ndarray, rng: np.random.Generator, augment: Augment,
                  mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """Samples parameters from `rng` and applies them: uint8 in, float32 out."""
    n, h, w, _ = images.shape
    return apply_augment(images, sample_augment(rng, n, h, w, augment), augment,
                         mean, std)
