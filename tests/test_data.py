"""Datasets: digits offline, the tfds path under mock data, and the offline error."""

import numpy as np
import pytest

from gannas_jax import data


@pytest.fixture(scope="module")
def digits():
    return data.digits()


def test_digits_split_is_deterministic_disjoint_and_normalized(digits):
    again = data.digits()
    np.testing.assert_array_equal(digits.x_train, again.x_train)
    np.testing.assert_array_equal(digits.y_test, again.y_test)
    assert digits.input_shape == (8, 8, 1) and digits.num_classes == 10
    n = len(digits.x_train) + len(digits.x_val) + len(digits.x_test)
    assert n == 1797
    assert abs(len(digits.x_val) - 0.2 * n) < 10 and abs(len(digits.x_test) - 0.2 * n) < 10
    # No image appears in two splits, and every raw image is used exactly once with its label.
    # Compared as whole images (pixel sums would not do: 1797 images have only 164 distinct sums).
    # The raw data has no exact duplicates, so an image shared by two splits is a split bug.
    from sklearn.datasets import load_digits

    raw = load_digits()
    raw_x = raw.images.reshape(n, -1).astype(np.uint8)
    assert len(np.unique(raw_x, axis=0)) == n
    label_of = {row.tobytes(): int(t) for row, t in zip(raw_x, raw.target, strict=True)}
    splits = {}
    for name in ("train", "val", "test"):
        x = getattr(digits, f"x_{name}").reshape(-1, 64) * digits.std[0] + digits.mean[0]
        pixels = np.round(x)
        np.testing.assert_allclose(x, pixels, atol=1e-3)  # de-normalizes to the raw 0..16 values
        keys = [row.tobytes() for row in pixels.astype(np.uint8)]
        assert len(set(keys)) == len(keys), f"an image repeats within {name}"
        assert [label_of.get(k) for k in keys] == getattr(digits, f"y_{name}").tolist()
        splits[name] = set(keys)
    assert not splits["train"] & splits["val"]
    assert not splits["train"] & splits["test"]
    assert not splits["val"] & splits["test"]
    assert splits["train"] | splits["val"] | splits["test"] == set(label_of)
    assert abs(float(digits.x_train.mean())) < 1e-4 and abs(float(digits.x_train.std()) - 1) < 1e-3
    for y in (digits.y_train, digits.y_val, digits.y_test):
        assert set(np.unique(y)) == set(range(10))  # stratified
    other = data.digits(seed=1)
    assert not np.array_equal(other.y_train, digits.y_train)


def test_batch_indices_epochs_and_seed():
    idx = data.batch_indices(10, 4, 5, seed=3)
    assert idx.shape == (5, 4) and idx.dtype == np.int32
    flat = idx.reshape(-1)
    assert sorted(flat[:10]) == list(range(10))  # first epoch is a permutation
    np.testing.assert_array_equal(idx, data.batch_indices(10, 4, 5, seed=3))
    assert not np.array_equal(idx, data.batch_indices(10, 4, 5, seed=4))
    with pytest.raises(ValueError):
        data.batch_indices(0, 4, 5, 0)


def test_batches_iterator(digits):
    it = data.batches(digits.x_train, digits.y_train, 16, seed=0, steps=3)
    got = list(it)
    assert len(got) == 3 and got[0][0].shape == (16, 8, 8, 1)
    idx = data.batch_indices(len(digits.x_train), 16, 3, 0)
    np.testing.assert_array_equal(got[2][1], digits.y_train[idx[2]])
    endless = data.batches(digits.x_train, digits.y_train, 500, seed=0)
    assert len([next(endless) for _ in range(5)]) == 5


@pytest.mark.parametrize(
    "name,shape", [("mnist", (28, 28, 1)), ("fashion_mnist", (28, 28, 1)), ("cifar10", (32, 32, 3))]
)
def test_tfds_path_with_mock_data(name, shape):
    import tensorflow_datasets as tfds  # a core dependency: a missing install must fail, not skip

    with tfds.testing.mock_data(num_examples=40):
        ds = data.load_dataset(name, val_size=8)
    assert ds.input_shape == shape and ds.num_classes == 10
    assert len(ds.x_train) == 32 and len(ds.x_val) == 8 and len(ds.x_test) == 40
    assert ds.x_train.dtype == np.float32 and ds.y_train.dtype == np.int32
    np.testing.assert_allclose(ds.x_train.mean(axis=(0, 1, 2)), 0, atol=1e-4)


def test_missing_tfds_dataset_gives_one_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path))
    with pytest.raises(data.DatasetUnavailableError) as info:
        data.load_dataset("fashion_mnist")
    msg = str(info.value)
    assert "fashion_mnist" in msg and str(tmp_path) in msg and "TFDS_DATA_DIR" in msg
    assert "download" in msg
    assert (
        info.value.__cause__ is None and info.value.__suppress_context__
    )  # no chained traceback wall


def test_unknown_dataset():
    with pytest.raises(ValueError, match="unknown dataset"):
        data.load_dataset("imagenet")
