"""The train/validation splits of the two protocols: AdaPT's k-fold, MuPPET's hold-out."""
from __future__ import annotations

from typing import Optional

import numpy as np

from adapt.data.base import ImageDataset, check_int, labels_numpy

SPLIT_PROTOCOLS = ("kfold", "holdout", "none")


# --------------------------------------------------------------------------- splits


def kfold_split(labels, n_splits: int = 10, fold: int = 0, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``(train_idx, val_idx)`` of fold ``fold`` of ``StratifiedKFold(n_splits,
    shuffle=True, random_state=seed)`` (AdaPT's protocol: 10 folds)."""
    from sklearn.model_selection import StratifiedKFold

    y = labels_numpy(labels)
    n_splits = check_int("n_splits", n_splits, 2)
    if n_splits > len(y):
        raise ValueError(f"n_splits={n_splits} exceeds the number of examples ({len(y)})")
    fold = check_int("fold", fold, 0, n_splits - 1)
    seed = check_int("seed", seed, 0)
    skf = StratifiedKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    for k, (train_idx, val_idx) in enumerate(skf.split(np.zeros(len(y)), y)):
        if k == fold:
            return train_idx.astype(np.int64), val_idx.astype(np.int64)
    raise AssertionError("unreachable")


def holdout_split(labels, val_fraction: float = 0.2, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``(train_idx, val_idx)``: a stratified random split holding out ``val_fraction``
    (MuPPET's protocol: a fixed 80/20 train/val split of the training set)."""
    from sklearn.model_selection import train_test_split

    y = labels_numpy(labels)
    if isinstance(val_fraction, bool) or not isinstance(val_fraction, (int, float)) or not 0 < val_fraction < 1:
        raise ValueError(f"val_fraction must be a number in (0, 1), got {val_fraction!r}")
    seed = check_int("seed", seed, 0)
    train_idx, val_idx = train_test_split(
        np.arange(len(y)), test_size=float(val_fraction), stratify=y, random_state=seed
    )
    return np.sort(train_idx).astype(np.int64), np.sort(val_idx).astype(np.int64)


def make_splits(
    train: ImageDataset,
    protocol: str = "kfold",
    *,
    fold: int = 0,
    n_splits: int = 10,
    val_fraction: float = 0.2,
    seed: int = 0,
) -> tuple[ImageDataset, Optional[ImageDataset]]:
    """Split the training set for validation: ``"kfold"`` (fold ``fold`` of
    ``n_splits``), ``"holdout"`` (``val_fraction`` held out) or ``"none"`` (the whole
    set trains, no validation set)."""
    if protocol not in SPLIT_PROTOCOLS:
        raise ValueError(f"unknown split protocol {protocol!r}; valid: {', '.join(SPLIT_PROTOCOLS)}")
    if protocol == "none":
        return train, None
    if protocol == "kfold":
        train_idx, val_idx = kfold_split(train.labels, n_splits=n_splits, fold=fold, seed=seed)
    else:
        train_idx, val_idx = holdout_split(train.labels, val_fraction=val_fraction, seed=seed)
    return train.subset(train_idx), train.subset(val_idx)
