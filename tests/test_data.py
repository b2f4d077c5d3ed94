import gzip
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from fashionmlp.data import (
    FILES,
    MEAN,
    STD,
    TensorSplit,
    classic_batches,
    epoch_order,
    fast_batches,
    load_fashion_mnist,
    normalize,
    read_idx,
    resolve_data_dir,
)
from fashionmlp.errors import DataError

from helpers import idx_bytes, write_dataset


def test_reads_flat_layout(tiny_data):
    data = load_fashion_mnist(tiny_data, verify_md5=False, allow_download=False)
    assert data.train.images.shape == (320, 28, 28) and data.train.images.dtype == np.uint8
    assert data.test.labels.shape == (160,) and data.test.labels.dtype == np.int64
    assert data.val is None


def test_reads_torchvision_layout_uncompressed(tmp_path):
    write_dataset(tmp_path / "FashionMNIST" / "raw", gz=False)
    data = load_fashion_mnist(tmp_path, verify_md5=False, allow_download=False)
    assert len(data.train.labels) == 320


def test_subset_and_val_split_are_seeded(tiny_data):  # (b: the folder as a plain string works too)
    a = load_fashion_mnist(tiny_data, verify_md5=False, allow_download=False, subset=200, val_size=50, seed=3)
    b = load_fashion_mnist(str(tiny_data), verify_md5=False, allow_download=False, subset=200, val_size=50, seed=3)
    c = load_fashion_mnist(tiny_data, verify_md5=False, allow_download=False, subset=200, val_size=50, seed=4)
    assert len(a.train.labels) == 150 and len(a.val.labels) == 50
    assert np.array_equal(a.val.images, b.val.images)
    assert not np.array_equal(a.val.images, c.val.images)


def test_md5_mismatch_is_reported(tiny_data):
    with pytest.raises(DataError, match="does not match the published"):
        load_fashion_mnist(tiny_data, verify_md5=True, allow_download=False)


def test_an_unzipped_file_is_md5_checked_too(tmp_path):
    """Unzipped files were never checked: test labels all set to 0 trained and scored 95% without a word."""
    write_dataset(tmp_path, gz=False)
    with pytest.raises(DataError, match="train-images-idx3-ubyte: MD5 .* does not match Fashion-MNIST's unzipped "
                                        "f4a8712d7a061bf5bd6d2ca38dc4d50a"):
        load_fashion_mnist(tmp_path, verify_md5=True, allow_download=False)
    assert len(load_fashion_mnist(tmp_path, verify_md5=False, allow_download=False).train.labels) == 320


def test_the_real_files_unzipped_pass_the_check_and_read_the_same(real_data, tmp_path):
    import gzip

    for name, _ in FILES.values():
        (tmp_path / name.removesuffix(".gz")).write_bytes(gzip.decompress((real_data / name).read_bytes()))
    unzipped = load_fashion_mnist(tmp_path, verify_md5=True, allow_download=False)
    published = load_fashion_mnist(real_data, verify_md5=True, allow_download=False)
    assert np.array_equal(unzipped.test.labels, published.test.labels)
    assert np.array_equal(unzipped.train.images, published.train.images)


def test_missing_files_offline(tmp_path):
    with pytest.raises(DataError, match="Fashion-MNIST files missing") as info:
        load_fashion_mnist(tmp_path, allow_download=False)
    assert all(name in str(info.value) for name, _ in FILES.values())


def test_failed_download_says_where_to_put_files(tmp_path, monkeypatch):
    import torchvision.datasets

    def offline(root, *args, **kwargs):  # as torchvision does: its folders first, then the failed fetch
        (Path(root) / "FashionMNIST" / "raw").mkdir(parents=True, exist_ok=True)
        raise RuntimeError("Error downloading train-images-idx3-ubyte.gz")

    monkeypatch.setattr(torchvision.datasets, "FashionMNIST", offline)
    with pytest.raises(DataError, match="download failed: RuntimeError: Error downloading train-images-idx3-ubyte.gz"
                                        r"\); put the .gz files there"):  # the cause was left out
        load_fashion_mnist(tmp_path / "new" / "deeper", allow_download=True)
    assert not (tmp_path / "new").exists()  # no empty folders left behind
    existing = tmp_path / "a_run_folder"  # e.g. --data-dir given a run folder: it stays as it was
    existing.mkdir()
    (existing / "config.yaml").write_text("x: 1\n")
    with pytest.raises(DataError, match="download failed"):
        load_fashion_mnist(existing, allow_download=True)
    assert sorted(p.name for p in existing.iterdir()) == ["config.yaml"]


def test_a_bug_in_the_download_raises_instead_of_blaming_the_network(tmp_path, monkeypatch):
    """Every exception was "download failed" (exit 2): a torchvision API change (TypeError) would have been told
    to the user as a network problem."""
    import torchvision.datasets

    def changed_api(root, train, download):
        raise TypeError("FashionMNIST() got an unexpected keyword argument 'download'")

    monkeypatch.setattr(torchvision.datasets, "FashionMNIST", changed_api)
    with pytest.raises(TypeError, match="unexpected keyword"):
        load_fashion_mnist(tmp_path / "new", allow_download=True)
    assert not (tmp_path / "new").exists()


def test_scoring_downloads_the_test_split_alone(tmp_path, monkeypatch):
    """evaluate, predict and inspect fetched the training split too (30 MB) where they score the test images."""
    import torchvision.datasets

    from fashionmlp.config import config_from_dict
    from fashionmlp.data import load_test

    asked = []

    def offline(root, train, download):
        asked.append(train)
        raise RuntimeError("offline")

    monkeypatch.setattr(torchvision.datasets, "FashionMNIST", offline)
    with pytest.raises(DataError, match=r"missing in .*: t10k-images-idx3-ubyte.gz, t10k-labels-idx1-ubyte.gz \("
                                        "download failed: RuntimeError: offline"):
        load_test(config_from_dict({"model": {"name": "mlp"}}), tmp_path / "empty")
    assert asked == [False]


@pytest.mark.parametrize("damage,message", [
    (lambda p: p.write_bytes(gzip.compress(b"hello world, not idx")), "not an IDX file"),
    (lambda p: p.write_bytes(gzip.compress(idx_bytes(np.zeros((10, 28, 28), np.uint8))[:-100])), "truncated"),
    (lambda p: p.write_bytes(b"\x1f\x8b\x08 broken gzip"), "cannot be read as gzip"),
])
def test_damaged_files(tmp_path, damage, message):
    root = write_dataset(tmp_path / "d")
    damage(root / "train-images-idx3-ubyte.gz")
    with pytest.raises(DataError, match=message):
        load_fashion_mnist(root, verify_md5=False, allow_download=False)


def test_count_mismatch(tmp_path):
    root = write_dataset(tmp_path / "d")
    shutil.copy(write_dataset(tmp_path / "other", n_train=100) / "train-labels-idx1-ubyte.gz",
                root / "train-labels-idx1-ubyte.gz")
    with pytest.raises(DataError, match="320 images, 100 labels"):
        load_fashion_mnist(root, verify_md5=False, allow_download=False)


def test_read_idx_roundtrip(tmp_path):
    arr = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    (tmp_path / "a").write_bytes(idx_bytes(arr))
    assert np.array_equal(read_idx(tmp_path / "a"), arr)


def test_resolution_order(monkeypatch, tmp_path):
    monkeypatch.setenv("FASHIONMLP_DATA_DIR", str(tmp_path / "env"))
    assert resolve_data_dir("cli", "cfg").name == "cli"
    assert resolve_data_dir(None, "cfg").name == "cfg"
    assert resolve_data_dir(None, None) == tmp_path / "env"
    monkeypatch.delenv("FASHIONMLP_DATA_DIR")
    assert str(resolve_data_dir(None, None)) == "data"


def test_normalize_matches_torchvision_transforms():
    from PIL import Image
    from torchvision import transforms

    images = torch.randint(0, 256, (5, 28, 28), dtype=torch.uint8)
    tv = transforms.Compose([transforms.ToTensor(), transforms.Normalize((MEAN,), (STD,))])
    expected = torch.stack([tv(Image.fromarray(img.numpy())) for img in images])
    assert torch.equal(normalize(images), expected)  # bit for bit


def test_fast_and_classic_batches_are_identical(tiny_data):
    data = load_fashion_mnist(tiny_data, verify_md5=False, allow_download=False)
    split = TensorSplit.from_split(data.train, torch.device("cpu"))
    order_a = epoch_order(len(split), torch.Generator().manual_seed(7))
    order_b = epoch_order(len(split), torch.Generator().manual_seed(7))
    assert torch.equal(order_a, order_b)
    fast = list(fast_batches(split, 64, order_a))
    classic = list(classic_batches(data.train, 64, order_b))
    assert len(fast) == len(classic) == 5
    for (xf, yf), (xc, yc) in zip(fast, classic):
        assert torch.equal(xf, xc) and torch.equal(yf, yc)


def test_real_data_md5_and_shapes(real_data):
    data = load_fashion_mnist(real_data, verify_md5=True, allow_download=False)
    assert data.train.images.shape == (60000, 28, 28) and data.test.images.shape == (10000, 28, 28)
    assert np.bincount(data.train.labels).tolist() == [6000] * 10
    x = normalize(torch.from_numpy(data.train.images[:60000]))
    assert abs(float(x.mean())) < 1e-3 and abs(float(x.std()) - 1) < 1e-3  # MEAN/STD are the train statistics


def test_a_data_dir_that_is_a_loop_of_links_is_named_as_such(tmp_path):
    """It was called missing, a download into it was tried, and it failed with FileExistsError."""
    from helpers import cli

    (tmp_path / "a").symlink_to(tmp_path / "b")
    (tmp_path / "b").symlink_to(tmp_path / "a")
    result = cli("data", "--data-dir", tmp_path / "a")
    assert result.exit_code == 2 and result.stderr.count("\n") == 1
    assert "is a symbolic link that leads nowhere" in result.stderr and "download" not in result.stderr


def test_an_unreadable_data_file_is_one_line(tiny_data, monkeypatch):
    """Its MD5 check raised PermissionError's traceback (data, evaluate, predict); reading it unchecked said one line."""
    import builtins

    from helpers import cli

    real_open = builtins.open

    def refuse(path, *args, **kwargs):
        if str(path).endswith("t10k-images-idx3-ubyte.gz"):
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", refuse)
    result = cli("data", "--data-dir", tiny_data, "--no-download")
    assert result.exit_code == 2 and result.stderr.count("\n") == 1, result.output
    assert "t10k-images-idx3-ubyte.gz: cannot be read (PermissionError: Permission denied)" in result.stderr


def test_an_unreadable_data_folder_is_one_line(tiny_data, monkeypatch):
    """Looking for the files in a folder this user may not read raised PermissionError's traceback."""
    from helpers import cli

    real = Path.is_file

    def is_file(self):
        if self.parent == tiny_data:
            raise PermissionError(13, "Permission denied", str(self))
        return real(self)

    monkeypatch.setattr(Path, "is_file", is_file)
    result = cli("data", "--data-dir", tiny_data, "--no-download")
    assert result.exit_code == 2 and result.stderr.count("\n") == 1, result.output
    assert f"cannot look into {str(tiny_data)!r} (Permission denied)" in result.stderr
