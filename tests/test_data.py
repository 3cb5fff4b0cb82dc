"""Tests for adapt.data: CIFAR parsing on a fixture in the real on-disk format, the
download error, digits, synthetic data, the batched augmentation against
torchvision, loader determinism/resume, and the splits.  No network access."""
from __future__ import annotations

import hashlib
import os
import pickle
import struct
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

import adapt.data.base as data_base
import adapt.data.files as data
from adapt.data.base import CIFAR_MEAN, CIFAR_STD, DATASETS, ChecksumMismatch, DatasetNotAvailable, ImageDataset, default_root
from adapt.data.loader import DeviceLoader, augment_batch, normalize
from adapt.data.files import cifar_md5s, load_cifar, read_cifar_pickle
from adapt.data.splits import holdout_split, kfold_split, make_splits
from adapt.data.datasets import load_dataset, stratified_subset, synthetic

MEAN = torch.tensor(CIFAR_MEAN).view(1, 3, 1, 1)
STD = torch.tensor(CIFAR_STD).view(1, 3, 1, 1)


# ============================================================================ CIFAR fixture
class Py2Pickler(pickle._Pickler):
    """Writes what Python 2's cPickle wrote for the official CIFAR files: protocol 2,
    every ``str``/``bytes`` as a Python-2 byte string (SHORT_BINSTRING/BINSTRING, read
    back as bytes under ``encoding='bytes'``) and numpy 1's global
    ``numpy.core.multiarray._reconstruct``."""

    dispatch = dict(pickle._Pickler.dispatch)

    def _save_str8(self, obj):
        raw = obj.encode("latin-1") if isinstance(obj, str) else obj
        if len(raw) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(raw)]) + raw)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(raw)) + raw)
        self.memoize(raw)

    dispatch[bytes] = _save_str8
    dispatch[str] = _save_str8

    def save_global(self, obj, name=None):
        name = name or obj.__qualname__
        module = "numpy" if obj in (np.ndarray, np.dtype) else obj.__module__
        module = module.replace("numpy._core", "numpy.core")
        self.write(pickle.GLOBAL + module.encode() + b"\n" + name.encode() + b"\n")
        self.memoize(obj)


def dump(obj, path: Path, style: str) -> None:
    with open(path, "wb") as f:
        if style == "py2":
            Py2Pickler(f, protocol=2).dump(obj)
        else:  # a Python 3 re-pickle: bytes keys via _codecs.encode
            pickle.dump(obj, f, protocol=2)


def coded_images(ids) -> np.ndarray:
    """Rows in CIFAR's layout (R plane, G plane, B plane; 32x32 row-major each):
    R = 8*column (horizontal gradient), G = 8*row (vertical gradient), B = the id."""
    ids = np.asarray(ids)
    col = np.tile(np.arange(32) * 8, (32, 1))
    r = np.broadcast_to(col, (len(ids), 32, 32))
    g = np.broadcast_to(col.T, (len(ids), 32, 32))
    b = np.broadcast_to(ids[:, None, None], (len(ids), 32, 32))
    return np.stack([r, g, b], axis=1).reshape(len(ids), 3072).astype(np.uint8)


def write_cifar(root: Path, name: str, style: str = "py2") -> dict:
    """A tiny CIFAR-10 or CIFAR-100 directory in the official python format.
    Returns the expected labels, ids and class names."""
    if name == "cifar10":
        folder = root / "cifar-10-batches-py"
        folder.mkdir(parents=True)
        classes = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
        train_labels, train_ids = [], []
        for k in range(1, 6):
            ids = [10 * k + j for j in range(4)]
            labels = [(3 * k + j) % 10 for j in range(4)]
            train_ids += ids
            train_labels += labels
            dump({"batch_label": f"training batch {k} of 5", "labels": labels, "data": coded_images(ids),
                  "filenames": [f"img_{i}.png" for i in ids]}, folder / f"data_batch_{k}", style)
        test_ids, test_labels = [200, 201, 202], [9, 0, 5]
        dump({"batch_label": "testing batch 1 of 1", "labels": test_labels, "data": coded_images(test_ids),
              "filenames": [f"t_{i}.png" for i in test_ids]}, folder / "test_batch", style)
        dump({"num_cases_per_batch": 4, "label_names": classes, "num_vis": 3072}, folder / "batches.meta", style)
    else:
        folder = root / "cifar-100-python"
        folder.mkdir(parents=True)
        classes = [f"fine{i:02d}" for i in range(100)]
        train_ids, train_labels = list(range(7)), [0, 99, 42, 7, 99, 13, 64]
        test_ids, test_labels = [100, 101], [55, 1]
        for split, ids, labels in (("train", train_ids, train_labels), ("test", test_ids, test_labels)):
            dump({"filenames": [f"{i}.png" for i in ids], "batch_label": f"{split}ing batch 1 of 1",
                  "fine_labels": labels, "coarse_labels": [lab // 5 for lab in labels],
                  "data": coded_images(ids)}, folder / split, style)
        dump({"fine_label_names": classes, "coarse_label_names": [f"coarse{i}" for i in range(20)]},
             folder / "meta", style)
    md5s = {p.name: hashlib.md5(p.read_bytes()).hexdigest() for p in folder.iterdir()}
    return dict(folder=folder, classes=classes, train_ids=train_ids, train_labels=train_labels,
                test_ids=test_ids, test_labels=test_labels, md5s=md5s)


def check_coded(ds: ImageDataset, ids, labels, classes, name) -> None:
    n = len(ids)
    assert ds.images.shape == (n, 3, 32, 32) and ds.images.dtype == torch.uint8
    assert ds.labels.dtype == torch.int64 and ds.labels.tolist() == labels
    assert ds.classes == classes and ds.name == name
    col = torch.arange(32) * 8
    assert torch.equal(ds.images[:, 0], col.expand(n, 32, 32).to(torch.uint8))  # R plane first
    assert torch.equal(ds.images[:, 1], col[:, None].expand(n, 32, 32).to(torch.uint8))
    assert ds.images[:, 2, 5, 7].tolist() == ids


def no_download(*args, **kwargs):
    raise AssertionError(f"unexpected download {args} {kwargs}")


@pytest.fixture
def offline(monkeypatch):
    """Any download attempt fails as it does without network."""
    calls = []

    def fail(url, root, filename, md5):
        calls.append((url, Path(root), filename, md5))
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(data, "_download_archive", fail)
    return calls


@pytest.mark.parametrize("style", ["py2", "py3"])
def test_cifar10_fixture_parses(tmp_path, monkeypatch, style):
    monkeypatch.setattr(data, "_download_archive", no_download)
    fx = write_cifar(tmp_path, "cifar10", style)
    train, test = load_cifar("cifar10", tmp_path, md5s=fx["md5s"])
    check_coded(train, fx["train_ids"], fx["train_labels"], fx["classes"], "cifar10")
    check_coded(test, fx["test_ids"], fx["test_labels"], fx["classes"], "cifar10")
    assert train.images.is_contiguous() and train.device.type == "cpu"


def test_cifar100_fixture_parses_fine_labels(tmp_path, monkeypatch):
    monkeypatch.setattr(data, "_download_archive", no_download)
    fx = write_cifar(tmp_path, "cifar100")
    train, test = load_dataset("cifar100", tmp_path, md5s=fx["md5s"])
    check_coded(train, fx["train_ids"], fx["train_labels"], fx["classes"], "cifar100")
    check_coded(test, fx["test_ids"], fx["test_labels"], fx["classes"], "cifar100")
    assert train.num_classes == 100


def test_fixture_pickles_look_like_the_originals(tmp_path):
    """The py2 fixture uses the original's globals and byte strings, and the restricted
    reader returns the real field names as bytes."""
    fx = write_cifar(tmp_path, "cifar10")
    raw = (fx["folder"] / "data_batch_1").read_bytes()
    assert raw[:2] == b"\x80\x02" and b"numpy.core.multiarray\n_reconstruct" in raw and b"_codecs" not in raw
    batch = read_cifar_pickle(fx["folder"] / "data_batch_1")
    assert set(batch) == {b"batch_label", b"labels", b"data", b"filenames"}
    assert batch[b"data"].shape == (4, 3072) and batch[b"data"].dtype == np.uint8


def test_official_md5_table_rejects_fixture_naming_the_file(tmp_path, monkeypatch):
    monkeypatch.setattr(data, "_download_archive", no_download)
    write_cifar(tmp_path, "cifar10")
    with pytest.raises(ChecksumMismatch) as err:
        load_cifar("cifar10", tmp_path)
    msg = str(err.value)
    assert "data_batch_1" in msg and cifar_md5s("cifar10")["data_batch_1"] in msg
    assert "cs.toronto.edu" in msg


def test_md5_table_mismatch_names_that_file(tmp_path, monkeypatch):
    monkeypatch.setattr(data, "_download_archive", no_download)
    fx = write_cifar(tmp_path, "cifar10")
    table = dict(fx["md5s"], test_batch="0" * 32)
    with pytest.raises(ChecksumMismatch, match="test_batch"):
        load_cifar("cifar10", tmp_path, md5s=table)
    del table["test_batch"]
    with pytest.raises(ValueError, match="'test_batch'"):
        load_cifar("cifar10", tmp_path, md5s=table)
    # verification off: the fixture loads without any table
    assert len(load_cifar("cifar10", tmp_path, verify=False)[0]) == 20


def test_official_tables_come_from_torchvision():
    from torchvision.datasets import CIFAR10, CIFAR100

    assert cifar_md5s("cifar10")["data_batch_1"] == dict(CIFAR10.train_list)["data_batch_1"]
    assert cifar_md5s("cifar100") == {**dict(CIFAR100.train_list), **dict(CIFAR100.test_list),
                                      "meta": CIFAR100.meta["md5"]}


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class _EvalEvil:
    def __reduce__(self):
        return (eval, ("1+1",))


@pytest.mark.parametrize("payload,forbidden", [("system", "system"), ("eval", ".eval")])
def test_restricted_unpickler_rejects_forbidden_globals(tmp_path, monkeypatch, payload, forbidden):
    monkeypatch.setattr(data, "_download_archive", no_download)
    fx = write_cifar(tmp_path, "cifar10")
    marker = tmp_path / "pwned"
    evil = _Evil(marker) if payload == "system" else _EvalEvil()
    path = fx["folder"] / "data_batch_3"
    with open(path, "wb") as f:
        pickle.dump({b"data": evil, b"labels": []}, f, protocol=2)
    with pytest.raises(pickle.UnpicklingError) as err:
        load_cifar("cifar10", tmp_path, verify=False)
    assert forbidden in str(err.value) and "data_batch_3" in str(err.value)
    assert not marker.exists()


def test_malformed_batch_names_file_and_field(tmp_path, monkeypatch):
    monkeypatch.setattr(data, "_download_archive", no_download)
    fx = write_cifar(tmp_path, "cifar10")
    dump({"labels": [1], "data": np.zeros((1, 100), np.uint8)}, fx["folder"] / "data_batch_2", "py2")
    with pytest.raises(ValueError, match=r"data_batch_2.*b'data'.*\(1, 100\)"):
        load_cifar("cifar10", tmp_path, verify=False)
    dump({"data": np.zeros((1, 3072), np.uint8)}, fx["folder"] / "data_batch_2", "py2")
    with pytest.raises(ValueError, match=r"data_batch_2.*b'labels'"):
        load_cifar("cifar10", tmp_path, verify=False)
    dump({"labels": [10], "data": np.zeros((1, 3072), np.uint8)}, fx["folder"] / "data_batch_2", "py2")
    with pytest.raises(ValueError, match=r"data_batch_2.*label 10"):
        load_cifar("cifar10", tmp_path, verify=False)


# ============================================================================ download / root
@pytest.mark.parametrize("name,folder,url", [
    ("cifar10", "cifar-10-batches-py", "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"),
    ("cifar100", "cifar-100-python", "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz"),
])
def test_missing_files_and_failed_download_give_clear_error(tmp_path, offline, name, folder, url):
    with pytest.raises(DatasetNotAvailable) as err:
        load_dataset(name, tmp_path)
    msg = str(err.value)
    assert str((tmp_path / folder).resolve()) in msg
    assert url in msg and "tar xzf" in msg and "ADAPT_DATA" in msg and "digits" in msg
    assert "URLError" in msg and "name resolution" in msg  # the cause, in one line
    assert isinstance(err.value.__cause__, urllib.error.URLError)
    from torchvision.datasets import CIFAR10, CIFAR100

    cls = CIFAR10 if name == "cifar10" else CIFAR100
    assert offline == [(cls.url, tmp_path, cls.filename, cls.tgz_md5)]


def test_download_false_does_not_try(tmp_path, offline):
    with pytest.raises(DatasetNotAvailable, match="download=False"):
        load_cifar("cifar10", tmp_path, download=False)
    assert offline == []


def test_partial_directory_triggers_download_listing_missing_files(tmp_path, offline):
    fx = write_cifar(tmp_path, "cifar10")
    (fx["folder"] / "data_batch_4").unlink()
    with pytest.raises(DatasetNotAvailable, match="Missing from .*: data_batch_4"):
        load_cifar("cifar10", tmp_path, md5s=fx["md5s"])
    assert len(offline) == 1


def test_successful_download_is_parsed(tmp_path, monkeypatch):
    """The downloader extracts into root; the result is parsed from root/<base folder>."""
    tables = {}

    def fake_download(url, root, filename, md5):
        tables.update(write_cifar(Path(root), "cifar10")["md5s"])

    monkeypatch.setattr(data, "_download_archive", fake_download)
    with pytest.raises(ChecksumMismatch):  # the fake archive is not the official one
        load_cifar("cifar10", tmp_path / "cache")
    train, _ = load_cifar("cifar10", tmp_path / "cache", md5s=tables)
    assert len(train) == 20


def test_adapt_data_env_var_is_honoured(tmp_path, monkeypatch, offline):
    monkeypatch.setenv("ADAPT_DATA", str(tmp_path))
    assert default_root() == tmp_path
    fx = write_cifar(tmp_path, "cifar10")
    train, test = load_dataset("cifar10", md5s=fx["md5s"])
    assert len(train) == 20 and len(test) == 3
    with pytest.raises(DatasetNotAvailable) as err:
        load_dataset("cifar100")
    assert str((tmp_path / "cifar-100-python").resolve()) in str(err.value) and "$ADAPT_DATA" in str(err.value)
    assert offline[0][1] == tmp_path


def test_default_root_is_repo_data(monkeypatch):
    monkeypatch.delenv("ADAPT_DATA", raising=False)
    assert default_root() == Path(data_base.__file__).resolve().parents[2] / "data"


# ============================================================================ archive placed by hand, unusable roots
ARCHIVES = {"cifar10": ("cifar-10-python.tar.gz", "cifar-10-batches-py"),
            "cifar100": ("cifar-100-python.tar.gz", "cifar-100-python")}


def assert_complete(exc: BaseException) -> str:
    """The whole explanation is in str(exc), including the offline alternative."""
    msg = str(exc)
    assert isinstance(exc, DatasetNotAvailable) and msg == exc.args[0]
    assert "'digits'" in msg and "offline" in msg
    return msg


def write_archive(src: Path, name: str, dest: Path, members=None) -> tuple[dict, str]:
    """A tar.gz of a fixture CIFAR folder (its official layout: one top-level folder);
    ``members``: only these files of it.  Returns the fixture and the archive's md5."""
    import tarfile

    fx = write_cifar(src, name)
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(dest, "w:gz") as tar:
        if members is None:
            tar.add(fx["folder"], arcname=fx["folder"].name)
        else:
            for m in members:
                tar.add(fx["folder"] / m, arcname=f"{fx['folder'].name}/{m}")
    return fx, hashlib.md5(dest.read_bytes()).hexdigest()


def expect_archive_md5(monkeypatch, md5: str) -> None:
    """The seam: the spec table's archive md5 (torchvision's) replaced by the fixture's."""
    import dataclasses

    real = data._cifar_spec
    monkeypatch.setattr(data, "_cifar_spec", lambda name: dataclasses.replace(real(name), tgz_md5=md5))


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
@pytest.mark.parametrize("download", [True, False])
def test_placed_archive_with_wrong_md5_is_reported_not_downloaded_over(tmp_path, offline, name, download):
    filename, folder = ARCHIVES[name]
    archive = tmp_path / filename
    archive.write_bytes(b"<html>403 Forbidden</html>" * 40)  # e.g. a proxy's error page saved as the archive
    found = hashlib.md5(archive.read_bytes()).hexdigest()
    with pytest.raises(ChecksumMismatch) as err:
        load_cifar(name, tmp_path, download=download)
    msg = assert_complete(err.value)
    spec = data._cifar_spec(name)
    assert str(archive.resolve()) in msg and f"{archive.stat().st_size:,} bytes" in msg
    assert found in msg and spec.tgz_md5 in msg and found != spec.tgz_md5
    assert "truncated" in msg and f"{data._ARCHIVE_SIZES[filename]:,} bytes" in msg
    assert "delete" in msg and spec.url in msg and "let it download" in msg
    assert offline == []  # torchvision's downloader would have tried to fetch it again
    assert archive.exists() and not (tmp_path / folder).exists()  # nothing touched


@pytest.mark.parametrize("download", [True, False])
def test_placed_archive_with_right_md5_is_unpacked_without_network(tmp_path, offline, monkeypatch, download):
    root = tmp_path / "data"
    fx, md5 = write_archive(tmp_path / "src", "cifar10", root / "cifar-10-python.tar.gz")
    expect_archive_md5(monkeypatch, md5)
    train, test = load_cifar("cifar10", root, download=download, md5s=fx["md5s"])
    check_coded(train, fx["train_ids"], fx["train_labels"], fx["classes"], "cifar10")
    check_coded(test, fx["test_ids"], fx["test_labels"], fx["classes"], "cifar10")
    assert offline == []
    assert sorted(p.name for p in (root / "cifar-10-batches-py").iterdir()) == sorted(fx["md5s"])
    # unpacked once: a second load reads the folder (the archive could go)
    (root / "cifar-10-python.tar.gz").unlink()
    assert len(load_cifar("cifar10", root, download=download, md5s=fx["md5s"])[0]) == 20


def test_placed_cifar100_archive_is_unpacked_through_load_dataset(tmp_path, offline, monkeypatch):
    fx, md5 = write_archive(tmp_path / "src", "cifar100", tmp_path / "root" / "cifar-100-python.tar.gz")
    expect_archive_md5(monkeypatch, md5)
    monkeypatch.setenv("ADAPT_DATA", str(tmp_path / "root"))
    train, _ = load_dataset("cifar100", md5s=fx["md5s"])
    check_coded(train, fx["train_ids"], fx["train_labels"], fx["classes"], "cifar100")
    assert offline == []


def test_placed_archive_missing_files_names_the_archive(tmp_path, offline, monkeypatch):
    archive = tmp_path / "root" / "cifar-10-python.tar.gz"
    _, md5 = write_archive(tmp_path / "src", "cifar10", archive, members=["batches.meta", "data_batch_1"])
    expect_archive_md5(monkeypatch, md5)
    with pytest.raises(DatasetNotAvailable) as err:
        load_cifar("cifar10", tmp_path / "root")
    msg = assert_complete(err.value)
    assert f"the archive {archive.resolve()} did not contain them" in msg
    assert "Missing from" in msg and "data_batch_2" in msg and "test_batch" in msg
    assert offline == []


def test_unreadable_placed_archive_says_so(tmp_path, offline, monkeypatch):
    archive = tmp_path / "cifar-10-python.tar.gz"
    archive.write_bytes(b"x")

    def unreadable(path, chunk=0):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(data, "md5_of", unreadable)
    with pytest.raises(DatasetNotAvailable) as err:
        load_cifar("cifar10", tmp_path)
    msg = assert_complete(err.value)
    assert str(archive.resolve()) in msg and "cannot be read" in msg and "Permission denied" in msg
    assert offline == []


def test_placed_archive_that_cannot_be_unpacked(tmp_path, offline, monkeypatch):
    archive = tmp_path / "cifar-10-python.tar.gz"
    archive.write_bytes(b"not a gzip stream")
    expect_archive_md5(monkeypatch, hashlib.md5(b"not a gzip stream").hexdigest())
    with pytest.raises(DatasetNotAvailable) as err:
        load_cifar("cifar10", tmp_path)
    msg = assert_complete(err.value)
    assert f"unpacking {archive.resolve()} failed" in msg and "ReadError" in msg
    assert offline == []


@pytest.mark.parametrize("download", [True, False])
def test_root_argument_that_is_a_file(tmp_path, offline, download):
    path = tmp_path / "notes.txt"
    path.write_text("not a folder")
    with pytest.raises(data.DataRootError) as err:
        load_cifar("cifar10", path, download=download)
    msg = assert_complete(err.value)
    assert f"{path} (from the root argument)" in msg and "is a file, not a folder" in msg
    assert f"root={str(tmp_path)!r}" in msg  # what to pass instead: the folder that holds it
    assert not isinstance(err.value.__cause__, FileExistsError) and offline == []


def test_adapt_data_that_is_a_file(tmp_path, offline, monkeypatch):
    """The usual slip: $ADAPT_DATA set to the archive itself instead of its folder."""
    archive = tmp_path / "cifar-10-python.tar.gz"
    archive.write_bytes(b"x")
    monkeypatch.setenv("ADAPT_DATA", str(archive))
    with pytest.raises(DatasetNotAvailable) as err:
        load_dataset("cifar10")
    msg = assert_complete(err.value)
    assert isinstance(err.value, data.DataRootError)
    assert f"{archive} (from $ADAPT_DATA)" in msg and "is a file, not a folder" in msg
    assert f"export ADAPT_DATA={tmp_path}" in msg and "unset it" in msg
    assert offline == []


def test_root_below_a_file_names_the_file(tmp_path, offline, monkeypatch):
    blocker = tmp_path / "data"
    blocker.write_text("")
    monkeypatch.setenv("ADAPT_DATA", str(blocker / "cifar"))
    with pytest.raises(data.DataRootError) as err:
        load_cifar("cifar10")
    msg = assert_complete(err.value)
    assert f"{blocker / 'cifar'} (from $ADAPT_DATA)" in msg
    assert f"its parent {blocker.resolve()} is a file, not a folder" in msg and "ADAPT_DATA=" in msg


def test_root_that_cannot_be_created(tmp_path, offline, monkeypatch):
    locked = tmp_path / "locked" / "data"
    real_mkdir = Path.mkdir

    def mkdir(self, *args, **kwargs):
        if self == locked:
            raise PermissionError(13, "Permission denied", str(self))
        return real_mkdir(self, *args, **kwargs)

    monkeypatch.setattr(Path, "mkdir", mkdir)
    with pytest.raises(data.DataRootError) as err:
        load_cifar("cifar10", locked)
    msg = assert_complete(err.value)
    assert f"{locked} (from the root argument)" in msg and "cannot be created" in msg
    assert "PermissionError" in msg and "Permission denied" in msg and "root=" in msg
    assert offline == []


def test_root_that_cannot_be_written(tmp_path, offline, monkeypatch):
    real_access = os.access
    monkeypatch.setattr(data_base.os, "access", lambda p, mode, **kw: False if Path(p) == tmp_path
                        else real_access(p, mode, **kw))
    monkeypatch.setenv("ADAPT_DATA", str(tmp_path))
    with pytest.raises(data.DataRootError) as err:
        load_cifar("cifar100")
    msg = assert_complete(err.value)
    assert f"{tmp_path} (from $ADAPT_DATA)" in msg and "cannot write" in msg and "export ADAPT_DATA=" in msg
    assert offline == []


def test_every_not_available_message_is_complete(tmp_path, offline):
    """download=False, a failed download, a corrupt batch file: each explains itself in str()."""
    with pytest.raises(DatasetNotAvailable) as err:
        load_cifar("cifar10", tmp_path, download=False)
    assert "download=False" in assert_complete(err.value)
    with pytest.raises(DatasetNotAvailable) as err:
        load_cifar("cifar10", tmp_path)
    assert "name resolution" in assert_complete(err.value)
    write_cifar(tmp_path, "cifar10")
    with pytest.raises(ChecksumMismatch) as err:
        load_cifar("cifar10", tmp_path)
    msg = assert_complete(err.value)
    assert "data_batch_1" in msg and data._cifar_spec("cifar10").tgz_md5 in msg


# ============================================================================ registry
def test_unknown_name_lists_valid_names():
    with pytest.raises(ValueError) as err:
        load_dataset("imagenet")
    assert "'imagenet'" in str(err.value)
    for name in ("cifar10", "cifar100", "digits", "synthetic"):
        assert name in str(err.value)
    assert set(DATASETS) == {"cifar10", "cifar100", "digits", "synthetic", "mnist", "fashion_mnist", "emnist",
                             "mnist5k"}


def test_synthetic_options_rejected_elsewhere():
    with pytest.raises(ValueError, match="n_train.*'digits'"):
        load_dataset("digits", n_train=10)


# ============================================================================ digits
@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


def test_digits_shapes_and_classes(digits):
    train, test = digits
    assert (len(train), len(test)) == (1437, 360)
    for ds in digits:
        assert ds.images.shape[1:] == (3, 32, 32) and ds.images.dtype == torch.uint8
        assert ds.labels.dtype == torch.int64 and ds.name == "digits"
        assert ds.classes == [str(i) for i in range(10)]
        assert torch.equal(ds.images[:, 0], ds.images[:, 1]) and torch.equal(ds.images[:, 0], ds.images[:, 2])
        assert sorted(ds.labels.unique().tolist()) == list(range(10))
    assert int(train.images.max()) == 255 and int(train.images.min()) == 0


def test_digits_split_is_stratified(digits):
    from sklearn.datasets import load_digits as sk

    total = np.bincount(sk().target, minlength=10)
    test_counts = digits[1].class_counts().numpy()
    assert np.all(np.abs(test_counts - 0.2 * total) <= 1)
    assert np.array_equal(digits[0].class_counts().numpy() + test_counts, total)


def test_digits_is_deterministic_and_real(digits):
    train2, test2 = load_dataset("digits")
    assert torch.equal(train2.images, digits[0].images) and torch.equal(test2.labels, digits[1].labels)
    # Each image is its 8x8 original scaled to 0..255 and resized bilinearly
    # (align_corners=False, no antialiasing): out = round(W @ img @ W.T), W built here.
    from sklearn.datasets import load_digits as sk
    from sklearn.model_selection import train_test_split

    bunch = sk()
    train_idx = np.sort(train_test_split(np.arange(1797), test_size=0.2, stratify=bunch.target, random_state=0)[0])
    assert torch.equal(digits[0].labels, torch.from_numpy(bunch.target[train_idx]))
    w = np.zeros((32, 8))
    for i in range(32):
        src = max((i + 0.5) / 4 - 0.5, 0.0)
        i0 = int(src)
        w[i, i0] += 1 - (src - i0)
        w[i, min(i0 + 1, 7)] += src - i0
    expected = np.einsum("ij,njk,lk->nil", w, bunch.images[train_idx] * 255 / 16, w)
    assert np.abs(digits[0].images[:, 0].numpy() - expected).max() <= 0.5 + 1e-9


# ============================================================================ synthetic, subset
def test_synthetic_shapes_seed_and_purpose():
    a_train, a_test = load_dataset("synthetic", n_train=64, n_test=16, num_classes=5, seed=3)
    b_train, _ = synthetic(64, 16, num_classes=5, seed=3)
    c_train, _ = synthetic(64, 16, num_classes=5, seed=4)
    assert a_train.images.shape == (64, 3, 32, 32) and len(a_test) == 16 and a_train.num_classes == 5
    assert torch.equal(a_train.images, b_train.images) and not torch.equal(a_train.images, c_train.images)
    assert not torch.equal(a_train.images[:16], a_test.images)
    assert "benchmark" in synthetic.__doc__ and "never" in synthetic.__doc__
    with pytest.raises(ValueError, match="n_train.*-1"):
        synthetic(-1, 4)


def test_stratified_subset_prefix_and_validation(digits):
    y = digits[0].labels
    small = stratified_subset(y, 100, seed=1)
    big = stratified_subset(y, 500, seed=1)
    assert len(small) == 100 and np.all(np.diff(small) > 0) and set(small) <= set(big)
    counts = np.bincount(y.numpy()[small], minlength=10)
    expected = 100 * np.bincount(y.numpy(), minlength=10) / len(y)
    assert np.all(np.abs(counts - expected) <= 1.5)
    assert not np.array_equal(small, stratified_subset(y, 100, seed=2))
    tr, te = load_dataset("digits", subset=100, test_subset=50, seed=1)
    assert (len(tr), len(te)) == (100, 50) and torch.equal(tr.labels, y[small])
    for bad in (0, 1438, 2.5):
        with pytest.raises(ValueError, match=f"subset.*{bad}"):
            load_dataset("digits", subset=bad)


def test_image_dataset_validation_and_subset():
    imgs = torch.zeros(4, 3, 8, 8, dtype=torch.uint8)
    with pytest.raises(ValueError, match="float32"):
        ImageDataset(imgs.float(), torch.zeros(4, dtype=torch.long), ["a", "b"], "x")
    with pytest.raises(ValueError, match="label 2"):
        ImageDataset(imgs, torch.tensor([0, 1, 2, 0]), ["a", "b"], "x")
    with pytest.raises(ValueError, match="4 images but 3 labels"):
        ImageDataset(imgs, torch.zeros(3, dtype=torch.long), ["a"], "x")
    ds = ImageDataset(imgs, torch.tensor([0, 1, 1, 0]), ["a", "b"], "x")
    assert ds.subset([3, 1]).labels.tolist() == [0, 1] and len(ds.subset(np.array([], int))) == 0
    with pytest.raises(ValueError, match="index 4"):
        ds.subset([4])
    assert ds.to("cpu").images.data_ptr() == ds.images.data_ptr()


# ============================================================================ augmentation
def test_normalize_is_exactly_totensor_normalize():
    x = torch.randint(0, 256, (5, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    assert torch.equal(normalize(x), (x.float() / 255 - MEAN) / STD)
    import torchvision.transforms as T1
    import torchvision.transforms.v2 as T2

    v1 = torch.stack([T1.Normalize(CIFAR_MEAN, CIFAR_STD)(T1.ToTensor()(im.permute(1, 2, 0).numpy())) for im in x])
    assert torch.equal(normalize(x), v1)
    v2 = T2.Compose([T2.ToDtype(torch.float32, scale=True), T2.Normalize(CIFAR_MEAN, CIFAR_STD)])(x)
    torch.testing.assert_close(normalize(x), v2, rtol=0, atol=1e-6)


def test_unaugmented_loader_output_is_exact(digits):
    ds = digits[1]
    loader = DeviceLoader(ds, 128, shuffle=False, augment=False)
    xs, ys = zip(*loader)
    assert [len(y) for y in ys] == [128, 128, 104] and len(loader) == 3
    assert torch.equal(torch.cat(xs), (ds.images.float() / 255 - MEAN) / STD)
    assert torch.equal(torch.cat(ys), ds.labels) and xs[0].dtype == torch.float32


def test_augment_batch_every_offset_and_flip_equals_manual_crop():
    img = torch.randint(1, 256, (3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    grid = torch.tensor([(t, l, f) for t in range(9) for l in range(9) for f in (0, 1)])
    out = augment_batch(img.expand(len(grid), -1, -1, -1), grid[:, :2], grid[:, 2].bool())
    from torchvision.transforms.v2 import functional as TF

    padded = F.pad(img, (4, 4, 4, 4))
    for k, (t, l, f) in enumerate(grid.tolist()):
        manual = padded[:, t:t + 32, l:l + 32]
        manual = manual.flip(-1) if f else manual
        assert torch.equal(out[k], manual)
        tv = TF.crop(TF.pad(img, [4], fill=0), t, l, 32, 32)
        assert torch.equal(out[k], TF.horizontal_flip(tv) if f else tv)
    assert int(out[0, :, :4].max()) == 0  # top-left crop: zero padding rows


@settings(max_examples=40, deadline=None)
@given(
    b=st.integers(1, 5), h=st.integers(1, 9), w=st.integers(1, 9), p=st.integers(0, 5),
    seed=st.integers(0, 2**31 - 1), dtype=st.sampled_from([torch.uint8, torch.float32]),
)
def test_augment_batch_property(b, h, w, p, seed, dtype):
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(1, 256, (b, 2, h, w), generator=g).to(dtype)
    offsets = torch.randint(0, 2 * p + 1, (b, 2), generator=g)
    flips = torch.rand(b, generator=g) < 0.5
    out = augment_batch(x, offsets, flips, p)
    assert out.shape == x.shape and out.dtype == dtype
    padded = F.pad(x, (p, p, p, p))
    for k in range(b):
        crop = padded[k, :, offsets[k, 0]:offsets[k, 0] + h, offsets[k, 1]:offsets[k, 1] + w]
        assert torch.equal(out[k], crop.flip(-1) if flips[k] else crop)


def test_loader_applies_its_plan(digits):
    ds = digits[1]
    loader = DeviceLoader(ds, 100, shuffle=True, augment=True, seed=5)
    loader.set_epoch(2)
    x = torch.cat([xb for xb, _ in loader])
    order, offsets, flips = loader.plan(2)
    assert sorted(order.tolist()) == list(range(len(ds)))
    assert torch.equal(x, normalize(augment_batch(ds.images[order], offsets, flips)))


# ---------------------------------------------------------------- statistics vs torchvision
N_DRAWS = 2000


def torchvision_draws(img: torch.Tensor, n: int, padding_mode: str = "constant", flip: bool = True):
    import torchvision.transforms.v2 as T2
    from torchvision import tv_tensors

    steps = [T2.RandomCrop(32, padding=4, padding_mode=padding_mode)]
    steps += [T2.RandomHorizontalFlip()] if flip else []
    pipe = T2.Compose(steps + [T2.ToDtype(torch.float32, scale=True), T2.Normalize(CIFAR_MEAN, CIFAR_STD)])
    torch.manual_seed(0)
    im = tv_tensors.Image(img)
    return torch.stack([pipe(im).as_subclass(torch.Tensor) for _ in range(n)])


def our_draws(img: torch.Tensor, n: int, seed: int = 0):
    ds = ImageDataset(img.expand(n, -1, -1, -1).contiguous(), torch.zeros(n, dtype=torch.long), ["0"], "one")
    loader = DeviceLoader(ds, 512, shuffle=True, augment=True, seed=seed)
    return torch.cat([x for x, _ in loader])


def decode_crop(x: torch.Tensor):
    """Crop corner and flip of each sample of the coded image (R = row+1, G = col+1)."""
    v = ((x * STD + MEAN) * 255).round().long()
    row = v[:, 0, 16, 16] - 1
    c1, c2 = v[:, 1, 16, 16] - 1, v[:, 1, 16, 17] - 1
    flip = c2 < c1
    top = row - 12
    left = torch.where(flip, c1 - 11, c1 - 12)
    return top, left, flip


@pytest.fixture(scope="module")
def coded_image():
    idx = torch.arange(1, 33, dtype=torch.uint8)
    blue = torch.full((32, 32), 77, dtype=torch.uint8)
    return torch.stack([idx[:, None].expand(32, 32), idx[None, :].expand(32, 32), blue])


def test_crop_offsets_and_flips_match_torchvision_distribution(coded_image):
    ours = decode_crop(our_draws(coded_image, N_DRAWS))
    theirs = decode_crop(torchvision_draws(coded_image, N_DRAWS))
    cells = []
    for top, left, flip in (ours, theirs):
        assert int(top.min()) == 0 and int(top.max()) == 8 and int(left.min()) == 0 and int(left.max()) == 8
        cells.append(torch.bincount(top * 18 + left * 2 + flip.long(), minlength=162).numpy())
        # flip rate: 0.5 within 4.5 standard errors
        assert abs(flip.float().mean().item() - 0.5) < 4.5 * (0.25 / N_DRAWS) ** 0.5
    # each is uniform over the 81 corners x 2 flips ...
    assert stats.chisquare(cells[0]).pvalue > 1e-3
    # ... and the two samples come from the same distribution
    assert stats.chi2_contingency(np.stack(cells)).pvalue > 1e-3


def max_abs_z(a: torch.Tensor, b: torch.Tensor) -> float:
    """Largest per-pixel z-score of the difference of the two mean maps."""
    se = (a.var(0) / len(a) + b.var(0) / len(b)).sqrt().clamp_min(1e-6)
    return float(((a.mean(0) - b.mean(0)).abs() / se).max())


def broken_draws(img: torch.Tensor, n: int, padding_mode: str, flip: bool) -> torch.Tensor:
    """Negative controls: the same random crops with another padding, or no flips."""
    g = torch.Generator().manual_seed(9)
    padded = F.pad(img.float()[None], (4, 4, 4, 4), mode=padding_mode)[0]
    corners = torch.randint(0, 9, (n, 2), generator=g).tolist()
    flips = (torch.rand(n, generator=g) < 0.5).tolist()
    crops = [padded[:, t:t + 32, l:l + 32] for t, l in corners]
    crops = torch.stack([c.flip(-1) if f and flip else c for c, f in zip(crops, flips)])
    return (crops / 255 - MEAN) / STD


def test_pixel_mean_maps_match_torchvision():
    g = torch.Generator().manual_seed(3)
    ramp = torch.linspace(90, 250, 32)
    img = torch.stack([ramp.expand(32, 32), ramp[:, None].expand(32, 32), torch.full((32, 32), 200.0)])
    img = (img + torch.randint(-30, 6, (3, 32, 32), generator=g)).clamp(0, 255).to(torch.uint8)
    ours = our_draws(img, N_DRAWS, seed=1)
    theirs = torchvision_draws(img, N_DRAWS)
    assert ours.shape == theirs.shape == (N_DRAWS, 3, 32, 32)
    # 3072 pixels: max |z| of a correct implementation is ~4; allow 5.5.
    assert max_abs_z(ours, theirs) < 5.5
    torch.testing.assert_close(ours.std(0), theirs.std(0), atol=0.25, rtol=0)  # max seen ~0.12
    # The same statistic rejects a wrong pipeline: reflect padding, or no flips ...
    assert max_abs_z(broken_draws(img, 1000, "reflect", True), theirs) > 20
    assert max_abs_z(broken_draws(img, 1000, "constant", False), theirs) > 20
    # ... and accepts the right one built the same way.
    assert max_abs_z(broken_draws(img, 1000, "constant", True), theirs) < 5.5


# ============================================================================ loader determinism
def batches(loader):
    return [(x.clone(), y.clone()) for x, y in loader]


def same(a, b) -> bool:
    return len(a) == len(b) and all(torch.equal(xa, xb) and torch.equal(ya, yb) for (xa, ya), (xb, yb) in zip(a, b))


@pytest.fixture(scope="module")
def small():
    train, _ = synthetic(300, 1, seed=0)
    return ImageDataset(train.images, torch.arange(300) % 10, train.classes, "small")


def test_same_seed_and_epoch_same_batches(small):
    a = DeviceLoader(small, 64, shuffle=True, augment=True, seed=7)
    b = DeviceLoader(small, 64, shuffle=True, augment=True, seed=7)
    a.set_epoch(1)
    b.set_epoch(1)
    first = batches(a)
    assert same(first, batches(b))
    a.set_epoch(1)
    assert same(first, batches(a))
    c = DeviceLoader(small, 64, shuffle=True, augment=True, seed=8)
    c.set_epoch(1)
    assert not same(first, batches(c))


def test_epochs_differ_and_cover_the_data(small):
    loader = DeviceLoader(small, 64, shuffle=True, augment=False, seed=0)
    orders = []
    for epoch in range(3):
        loader.set_epoch(epoch)
        ys = torch.cat([y for _, y in loader])
        assert sorted(ys.tolist()) == sorted(small.labels.tolist())
        orders.append(ys)
    assert not torch.equal(orders[0], orders[1]) and not torch.equal(orders[1], orders[2])


def test_resume_fresh_loader_reproduces_epoch(small):
    run = DeviceLoader(small, 64, shuffle=True, augment=True, seed=3)
    for epoch in range(4):
        run.set_epoch(epoch)
        seen = batches(run)
    fresh = DeviceLoader(small, 64, shuffle=True, augment=True, seed=3)
    fresh.set_epoch(3)
    assert same(seen, batches(fresh))
    # without set_epoch, each iteration advances the epoch by one
    auto = DeviceLoader(small, 64, shuffle=True, augment=True, seed=3)
    for _ in range(3):
        batches(auto)
    assert auto.epoch == 3 and same(seen, batches(auto))


def test_loader_lengths_and_drop_last(small):
    assert len(DeviceLoader(small, 64)) == 5
    loader = DeviceLoader(small, 64, shuffle=True, drop_last=True)
    assert len(loader) == 4 and [len(y) for _, y in loader] == [64] * 4
    assert len(DeviceLoader(small, 300, drop_last=True)) == 1


def test_loader_errors_name_the_value(small):
    for kwargs, pattern in [
        (dict(batch_size=0), "batch_size.*0"),
        (dict(batch_size=8, seed=-1), "seed.*-1"),
        (dict(batch_size=8, mean=(0.5, 0.5)), r"mean.*\(0.5, 0.5\)"),
        (dict(batch_size=301, drop_last=True), "batch_size 301"),
        (dict(batch_size=8, padding=-2), "padding.*-2"),
    ]:
        with pytest.raises(ValueError, match=pattern):
            DeviceLoader(small, **kwargs)
    with pytest.raises(ValueError, match="epoch.*-1"):
        DeviceLoader(small, 8).set_epoch(-1)
    with pytest.raises(ValueError, match="ImageDataset.*Tensor"):
        DeviceLoader(small.images, 8)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_batches_equal_cpu_batches(small):
    cpu = DeviceLoader(small, 64, shuffle=True, augment=True, seed=2)
    gpu = DeviceLoader(small, 64, shuffle=True, augment=True, seed=2, device="cuda")
    for (xc, yc), (xg, yg) in zip(cpu, gpu):
        assert xg.is_cuda and torch.equal(yc, yg.cpu())
        torch.testing.assert_close(xc, xg.cpu(), rtol=0, atol=1e-6)


# ============================================================================ splits
def test_kfold_partitions_and_is_stratified(digits):
    y = digits[0].labels.numpy()
    seen = []
    for fold in range(10):
        tr, va = kfold_split(y, 10, fold, seed=0)
        assert len(np.intersect1d(tr, va)) == 0 and len(tr) + len(va) == len(y)
        counts = np.bincount(y[va], minlength=10)
        assert np.all(np.abs(counts - np.bincount(y, minlength=10) / 10) <= 1)
        seen.append(va)
    assert np.array_equal(np.sort(np.concatenate(seen)), np.arange(len(y)))
    from sklearn.model_selection import StratifiedKFold

    ref = list(StratifiedKFold(10, shuffle=True, random_state=4).split(y, y))[7]
    got = kfold_split(y, 10, 7, seed=4)
    assert np.array_equal(got[0], ref[0]) and np.array_equal(got[1], ref[1])
    assert not np.array_equal(kfold_split(y, 10, 0, seed=1)[1], kfold_split(y, 10, 0, seed=0)[1])


@pytest.mark.parametrize("kwargs,pattern", [
    (dict(fold=10), r"fold must be in \[0, 9\], got 10"),
    (dict(fold=-1), "fold.*-1"),
    (dict(fold="1"), "fold.*'1'"),
    (dict(n_splits=1), "n_splits.*1"),
    (dict(seed=-3), "seed.*-3"),
])
def test_kfold_validation(kwargs, pattern):
    with pytest.raises(ValueError, match=pattern):
        kfold_split(np.arange(100) % 10, **kwargs)


def test_holdout_80_20_stratified(digits):
    y = digits[0].labels
    tr, va = holdout_split(y, 0.2, seed=0)
    assert len(va) == 288 and len(tr) == 1149 and len(np.intersect1d(tr, va)) == 0
    counts = np.bincount(y.numpy()[va], minlength=10)
    assert np.all(np.abs(counts - 0.2 * np.bincount(y.numpy(), minlength=10)) <= 1)
    assert np.array_equal(va, holdout_split(y, 0.2, seed=0)[1])
    for bad in (0, 1, 1.5, "0.2", True):
        with pytest.raises(ValueError, match=f"val_fraction.*{bad!r}"):
            holdout_split(y, bad)


def test_make_splits(digits):
    train = digits[0]
    tr, va = make_splits(train, "kfold", fold=2, n_splits=10, seed=0)
    assert len(tr) + len(va) == len(train) and abs(len(va) - len(train) / 10) <= 10
    assert torch.equal(va.labels, train.labels[kfold_split(train.labels, 10, 2, 0)[1]])
    tr, va = make_splits(train, "holdout", val_fraction=0.2)
    assert (len(tr), len(va)) == (1149, 288) and va.classes == train.classes
    tr, va = make_splits(train, "none")
    assert tr is train and va is None
    with pytest.raises(ValueError) as err:
        make_splits(train, "random")
    assert "'random'" in str(err.value) and "kfold" in str(err.value) and "holdout" in str(err.value)
