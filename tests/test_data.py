import gzip
import shutil
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxgrad.data import (
    batches,
    cifar_augment,
    eval_batches,
    get_batch,
    load_dataset,
    load_idx,
    load_tfds,
    make_dataset,
    random_crop,
    random_flip,
    read_idx,
    steps_per_epoch,
    validate_dataset,
)


def check_split(data, n, shape):
    assert data["image"].shape == (n, *shape) and data["image"].dtype == np.float32
    assert data["label"].shape == (n,) and data["label"].dtype == np.int32
    assert 0.0 <= data["image"].min() and data["image"].max() <= 1.0


def test_digits_fixed_split():
    train, test = load_dataset("digits", "train"), load_dataset("digits", "test")
    check_split(train, 1437, (8, 8, 1))
    check_split(test, 360, (8, 8, 1))
    assert train["image"].max() == 1.0
    assert set(np.unique(test["label"])) == set(range(10))
    # Fixed: the same split every call, and train and test are disjoint.
    np.testing.assert_array_equal(load_dataset("digits", "test")["image"], test["image"])
    from sklearn.datasets import load_digits

    total = load_digits().images.reshape(1797, -1) / 16.0
    rows = {r.tobytes() for r in np.float32(total)}
    assert len(rows) == 1797  # all images distinct, so rows identify examples
    train_rows = {r.tobytes() for r in train["image"].reshape(len(train["image"]), -1)}
    test_rows = {r.tobytes() for r in test["image"].reshape(len(test["image"]), -1)}
    assert not train_rows & test_rows and train_rows | test_rows == rows


def test_idx_shared_mnist_fixed_split(mnist_dir):
    train = load_dataset(f"idx:{mnist_dir}", "train")
    test = load_dataset(f"idx:{mnist_dir}", "test")
    check_split(train, 8000, (28, 28, 1))
    check_split(test, 2000, (28, 28, 1))
    np.testing.assert_array_equal(train["label"][:10], [7, 2, 1, 0, 4, 1, 4, 9, 5, 9])
    raw = read_idx(mnist_dir / "t10k-images-idx3-ubyte.gz")
    assert raw.shape == (10000, 28, 28) and raw.dtype == np.uint8
    np.testing.assert_array_equal(test["image"][0, ..., 0], raw[8000] / np.float32(255))


def test_idx_plain_and_gzip_agree_and_train_files_are_used(mnist_dir, tmp_path):
    for name in ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        with gzip.open(mnist_dir / f"{name}.gz") as src, open(tmp_path / name, "wb") as dst:
            shutil.copyfileobj(src, dst)
    plain = load_idx(tmp_path, "test", num_train=9000)
    gz = load_idx(mnist_dir, "test", num_train=9000)
    np.testing.assert_array_equal(plain["image"], gz["image"])
    np.testing.assert_array_equal(plain["label"], gz["label"])
    # With train files present, "train" reads them and "test" the whole t10k set.
    (tmp_path / "train-images-idx3-ubyte").symlink_to(tmp_path / "t10k-images-idx3-ubyte")
    (tmp_path / "train-labels-idx1-ubyte").symlink_to(tmp_path / "t10k-labels-idx1-ubyte")
    assert len(load_idx(tmp_path, "train")["label"]) == 10000
    assert len(load_idx(tmp_path, "test")["label"]) == 10000


def test_idx_errors(mnist_dir, tmp_path):
    with pytest.raises(FileNotFoundError, match="IDX folder not found"):
        load_idx(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="t10k-images-idx3-ubyte"):
        load_idx(tmp_path)
    (tmp_path / "t10k-images-idx3-ubyte").write_bytes(
        b"\x00\x00\x08\x03" + (5).to_bytes(4, "big") * 3 + b"x"
    )
    with pytest.raises(ValueError, match="header says shape"):
        read_idx(tmp_path / "t10k-images-idx3-ubyte")
    (tmp_path / "bad").write_bytes(b"PK\x03\x04junk")
    with pytest.raises(ValueError, match="bad magic"):
        read_idx(tmp_path / "bad")
    shutil.copy(mnist_dir / "t10k-images-idx3-ubyte.gz", tmp_path / "t10k-images-idx3-ubyte.gz")
    (tmp_path / "t10k-images-idx3-ubyte").unlink()
    with pytest.raises(FileNotFoundError, match="t10k-labels"):
        load_idx(tmp_path)


def test_validation_names_the_problem():
    img = np.random.default_rng(0).uniform(size=(5, 4, 4, 1)).astype(np.float32)
    lab = np.arange(5, dtype=np.int32)
    validate_dataset({"image": img, "label": lab}, "ok", num_classes=5)
    nan = img.copy()
    nan[3, 1, 1, 0] = np.nan
    with pytest.raises(ValueError, match="NaN or infinite values in 1 example.*index 3"):
        make_dataset(nan, lab, "src", 5)
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 4\)"):
        make_dataset(img, lab, "src", 4)
    with pytest.raises(ValueError, match="labels must be >= 0"):
        make_dataset(img, lab - 1, "src", 5)
    with pytest.raises(ValueError, match="rank 4"):
        make_dataset(img[..., 0], lab, "src", 5)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        make_dataset(img * 3, lab, "src", 5)
    with pytest.raises(ValueError, match="label must have shape"):
        make_dataset(img, lab[:3], "src", 5)
    with pytest.raises(TypeError, match="label must be integer"):
        make_dataset(img, lab.astype(np.float32), "src", 5)
    with pytest.raises(ValueError, match="source must be"):
        load_dataset("mnist")


@pytest.mark.parametrize(
    "name, shape, classes",
    [
        ("mnist", (28, 28, 1), 10),
        ("fashion_mnist", (28, 28, 1), 10),
        ("cifar10", (32, 32, 3), 10),
        ("cifar100", (32, 32, 3), 100),
        ("svhn", (32, 32, 3), 10),
    ],
)
def test_tfds_with_mock_data(name, shape, classes):
    tfds = pytest.importorskip("tensorflow_datasets")  # installed by the test extra
    with tfds.testing.mock_data(num_examples=12):
        data = load_dataset(f"tfds:{name}", "train")
    check_split(data, 12, shape)
    assert data["label"].max() < classes


def toy(n=10):
    return {
        "image": np.arange(n, dtype=np.float32)[:, None, None, None]
        * np.ones((1, 2, 2, 1), np.float32),
        "label": np.arange(n, dtype=np.int32),
    }


def test_batches_cover_each_example_once_per_epoch_and_pad_with_mask(key):
    data = toy(10)
    assert steps_per_epoch(10, 4) == 3
    seen = []
    for b in batches(data, key=key, batch_size=4, num_steps=6):
        assert b["image"].shape == (4, 2, 2, 1) and b["mask"].dtype == np.float32
        seen.append(b["label"][b["mask"] > 0])
    epoch1, epoch2 = np.concatenate(seen[:3]), np.concatenate(seen[3:])
    assert sorted(epoch1) == list(range(10)) and sorted(epoch2) == list(range(10))
    assert list(epoch1) != list(epoch2)  # reshuffled every epoch
    last = list(batches(data, key=key, batch_size=4, num_steps=3))[-1]
    np.testing.assert_array_equal(last["mask"], [1, 1, 0, 0])
    np.testing.assert_array_equal(last["label"], last["image"][:, 0, 0, 0])  # rows stay paired


def test_batches_are_a_function_of_the_step(key):
    data = toy(10)
    stream = list(batches(data, key=key, batch_size=4, num_steps=8))
    resumed = list(batches(data, key=key, batch_size=4, start_step=5, num_steps=3))
    for a, b in zip(stream[5:], resumed, strict=True):
        np.testing.assert_array_equal(a["label"], b["label"])
    np.testing.assert_array_equal(
        get_batch(data, 7, key=key, batch_size=4)["label"], stream[7]["label"]
    )
    other = list(batches(data, key=jax.random.key(1), batch_size=4, num_steps=3))
    assert any((a["label"] != b["label"]).any() for a, b in zip(stream[:3], other, strict=True))


def test_process_parts_make_up_the_global_batch(key):
    data = toy(10)
    whole = get_batch(data, 2, key=key, batch_size=4)
    parts = [
        get_batch(data, 2, key=key, batch_size=4, process_index=i, process_count=2)
        for i in range(2)
    ]
    np.testing.assert_array_equal(np.concatenate([p["label"] for p in parts]), whole["label"])
    np.testing.assert_array_equal(np.concatenate([p["mask"] for p in parts]), whole["mask"])
    with pytest.raises(ValueError, match="divisible by the process count"):
        get_batch(data, 0, key=key, batch_size=5, process_count=2)


def test_eval_batches_in_order():
    got = list(eval_batches(toy(10), 4))
    assert len(got) == 3
    labels = np.concatenate([b["label"][b["mask"] > 0] for b in got])
    np.testing.assert_array_equal(labels, np.arange(10))


def test_random_crop_is_a_shift_with_zero_fill(key):
    images = jax.random.uniform(key, (16, 6, 6, 2)) + 1.0  # strictly positive
    out = jax.jit(random_crop, static_argnames="padding")(key, images, padding=2)
    assert out.shape == images.shape
    padded = np.pad(np.asarray(images), ((0, 0), (2, 2), (2, 2), (0, 0)))
    offsets = set()
    for i in range(16):
        matches = [
            (dy, dx)
            for dy in range(5)
            for dx in range(5)
            if np.array_equal(padded[i, dy : dy + 6, dx : dx + 6], out[i])
        ]
        assert len(matches) == 1
        offsets.add(matches[0])
    assert len(offsets) > 1


def test_random_flip_flips_about_half(key):
    images = jax.random.uniform(key, (200, 4, 4, 1))
    out = np.asarray(random_flip(key, images))
    flipped = np.array(
        [np.array_equal(o, i[:, ::-1]) for o, i in zip(out, np.asarray(images), strict=True)]
    )
    kept = np.array([np.array_equal(o, i) for o, i in zip(out, np.asarray(images), strict=True)])
    assert (flipped ^ kept).all()
    assert 70 < flipped.sum() < 130
    aug = jax.jit(cifar_augment)(key, jnp.ones((2, 32, 32, 3)))
    assert aug.shape == (2, 32, 32, 3)


def test_an_unprepared_tfds_data_set_fails_fast_with_the_fix(tmp_path):
    """Offline, with nothing prepared: never a download; a named error within seconds that
    says how to prepare the data or which offline source to use instead."""
    import time

    t0 = time.perf_counter()
    with pytest.raises(
        FileNotFoundError, match=r"(?s)tfds:mnist .*is not prepared.*download_and_prepare.*idx:DIR"
    ):
        load_tfds("mnist", "train", data_dir=str(tmp_path))
    assert time.perf_counter() - t0 < 30


def test_nothing_a_user_runs_or_reads_refers_outside_the_repository():
    """Only the tests, the Makefile and .ci/ may name the project's folder beside the clone."""
    import subprocess

    repo = Path(__file__).resolve().parents[1]
    files = subprocess.run(
        ["git", "ls-files"], cwd=repo, capture_output=True, text=True, check=True
    ).stdout.split()
    bad = [
        f
        for f in files
        if not (f.startswith(("tests/", ".ci/")) or f == "Makefile")
        and (repo / f).is_file()
        and "../shared" in (repo / f).read_text(errors="ignore")
    ]
    assert bad == []


def test_host_shards_are_disjoint_equal_and_cover_all_but_a_remainder():
    from jaxgrad.data import host_shard, shard_indices

    shards = [shard_indices(10, i, 3) for i in range(3)]
    assert [len(s) for s in shards] == [3, 3, 3]
    assert len(np.unique(np.concatenate(shards))) == 9  # disjoint; one example left out
    data = toy(10)
    np.testing.assert_array_equal(host_shard(data, 1, 3)["label"], [1, 4, 7])
    with pytest.raises(ValueError, match="shard index must lie in"):
        shard_indices(10, 3, 3)
    assert len(load_dataset("digits", "train", shard=(0, 2))["label"]) == 1437 // 2


def test_tfds_reads_only_its_hosts_examples():
    tfds = pytest.importorskip("tensorflow_datasets")
    with tfds.testing.mock_data(num_examples=10):
        whole = load_dataset("tfds:cifar10", "train")
        part = load_dataset("tfds:cifar10", "train", shard=(1, 3))
    np.testing.assert_array_equal(part["image"], whole["image"][[1, 4, 7]])
    np.testing.assert_array_equal(part["label"], whole["label"][[1, 4, 7]])
