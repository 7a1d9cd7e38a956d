"""Datasets for child training: scikit-learn's bundled digits, and tensorflow-datasets images.

Every dataset comes back as a :class:`Dataset` of NHWC ``float32`` images, normalized with the
training split's per-channel mean and standard deviation, and ``int32`` labels, split into train,
validation and test.

* ``digits``: scikit-learn's bundled 8x8 digits (1,797 images, no download), split 60/20/20 by a
  seeded, class-stratified permutation.
* ``mnist``, ``fashion_mnist``, ``cifar10``: read through ``tfds.data_source``, which needs no
  TensorFlow; the validation split is the last ``val_size`` images of the official train split.
  tensorflow-datasets is imported inside the loader only, so ``import gannas_jax`` stays light.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator

import numpy as np

TFDS_DATASETS = ("mnist", "fashion_mnist", "cifar10")
DATASETS = ("digits",) + TFDS_DATASETS


class DatasetUnavailableError(RuntimeError):
    """A tensorflow-datasets dataset is not prepared on disk and was not downloaded."""


@dataclasses.dataclass(frozen=True, eq=False)
class Dataset:
    """Normalized image-classification splits.

    Attributes:
      name: dataset name.
      x_train, x_val, x_test: ``float32[n, H, W, C]``.
      y_train, y_val, y_test: ``int32[n]``.
      num_classes: number of classes.
      mean, std: ``float32[C]`` statistics used for normalization (train split).
    """

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int
    mean: np.ndarray
    std: np.ndarray

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """``(H, W, C)`` of one image."""
        return tuple(int(d) for d in self.x_train.shape[1:])  # type: ignore[return-value]


def _normalize(name, splits, num_classes) -> Dataset:
    (xtr, ytr), (xva, yva), (xte, yte) = splits
    xtr = xtr.astype(np.float32)
    mean = xtr.mean(axis=(0, 1, 2)).astype(np.float32)
    std = np.maximum(xtr.std(axis=(0, 1, 2)), 1e-6).astype(np.float32)

    def norm(x):
        c = x.shape[-1]
        return ((x.astype(np.float32) - mean.reshape(1, 1, 1, c)) / std.reshape(1, 1, 1, c)).astype(
            np.float32
        )

    return Dataset(
        name,
        norm(xtr),
        ytr.astype(np.int32),
        norm(xva),
        yva.astype(np.int32),
        norm(xte),
        yte.astype(np.int32),
        int(num_classes),
        mean,
        std,
    )


def digits(seed: int = 0, val_fraction: float = 0.2, test_fraction: float = 0.2) -> Dataset:
    """scikit-learn's bundled 8x8 digits, offline, with a deterministic stratified split.

    Args:
      seed: seed of the split permutation.
      val_fraction, test_fraction: fractions of each class held out.

    Returns:
      A :class:`Dataset` of ``[n, 8, 8, 1]`` images, 10 classes.
    """
    from sklearn.datasets import load_digits  # bundled with scikit-learn, no network

    d = load_digits()
    x = d.images.astype(np.float32)[..., None]  # [1797, 8, 8, 1], values 0..16
    y = d.target.astype(np.int32)
    rng = np.random.default_rng(seed)
    parts: list[list[np.ndarray]] = [[], [], []]
    for c in range(10):
        idx = rng.permutation(np.flatnonzero(y == c))
        n_val, n_test = int(round(len(idx) * val_fraction)), int(round(len(idx) * test_fraction))
        parts[1].append(idx[:n_val])
        parts[2].append(idx[n_val : n_val + n_test])
        parts[0].append(idx[n_val + n_test :])
    # A second seeded shuffle so that the classes are interleaved within each split.
    splits = []
    for p in parts:
        idx = rng.permutation(np.concatenate(p))
        splits.append((x[idx], y[idx]))
    return _normalize("digits", splits, 10)


def _unavailable_message(name: str, data_dir: str | None, err: BaseException) -> str:
    where = (
        data_dir or os.environ.get("TFDS_DATA_DIR") or os.path.expanduser("~/tensorflow_datasets")
    )
    return (
        f"Dataset '{name}' is not available offline: tensorflow-datasets found no prepared copy in "
        f"{where} (the folder comes from the data_dir argument, else $TFDS_DATA_DIR, else "
        f"~/tensorflow_datasets), and downloading is off. To get it, on a machine with internet "
        f'access run `python -c "import tensorflow_datasets as tfds; '
        f"tfds.data_source('{name}', download=True)\"`, copy the resulting '{name}' folder into "
        f"that directory (or point TFDS_DATA_DIR at it), or load with download=True here. "
        f"The embedded 'digits' dataset needs no download. (tfds said: "
        f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''})"
    )


def _read_all(src, n: int) -> list:
    """All records of a tfds random-access source (batched read where the source supports it)."""
    try:
        return list(src.__getitems__(list(range(n))))
    except (AttributeError, TypeError):  # mocked sources and older tfds versions
        return [src[i] for i in range(n)]


def tfds_dataset(
    name: str, data_dir: str | None = None, val_size: int = 5000, download: bool = False
) -> Dataset:
    """mnist, fashion_mnist or cifar10 through ``tfds.data_source`` (no TensorFlow needed).

    Args:
      name: one of ``TFDS_DATASETS``.
      data_dir: tfds data folder; default ``$TFDS_DATA_DIR`` or ``~/tensorflow_datasets``.
      val_size: images taken from the end of the official train split for validation.
      download: let tfds download and prepare the dataset if it is missing.

    Raises:
      DatasetUnavailableError: the dataset is not on disk (and not downloaded); the message says
        which dataset, where it was looked for and how to get it.
    """
    if name not in TFDS_DATASETS:
        raise ValueError(f"unknown tfds dataset {name!r}; expected one of {list(TFDS_DATASETS)}")
    import tensorflow_datasets as tfds  # lazy: heavy, and only needed here

    try:
        sources = tfds.data_source(
            name, split=["train", "test"], data_dir=data_dir, download=download
        )
        arrays = []
        for src in sources:
            n = len(src)
            if n == 0:
                raise ValueError("empty split")
            ex = _read_all(src, n)
            arrays.append(
                (
                    np.stack([np.asarray(e["image"]) for e in ex]),
                    np.asarray([int(e["label"]) for e in ex], np.int32),
                )
            )
    except Exception as err:  # tfds raises several types for "not prepared"; one clear message
        raise DatasetUnavailableError(_unavailable_message(name, data_dir, err)) from None
    (xtr, ytr), (xte, yte) = arrays
    if xtr.ndim == 3:
        xtr, xte = xtr[..., None], xte[..., None]
    val_size = min(val_size, len(xtr) // 5) if len(xtr) < 5 * val_size else val_size
    splits = [(xtr[:-val_size], ytr[:-val_size]), (xtr[-val_size:], ytr[-val_size:]), (xte, yte)]
    return _normalize(name, splits, 10)


def load_dataset(name: str, **kwargs) -> Dataset:
    """Loads a dataset by name (``digits``, ``mnist``, ``fashion_mnist``, ``cifar10``)."""
    if name == "digits":
        return digits(**kwargs)
    if name in TFDS_DATASETS:
        return tfds_dataset(name, **kwargs)
    raise ValueError(f"unknown dataset {name!r}; expected one of {list(DATASETS)}")


def batch_indices(n: int, batch_size: int, steps: int, seed: int) -> np.ndarray:
    """The training data order: ``int32[steps, batch_size]`` indices into the train split.

    Concatenated seeded permutations of ``range(n)`` (epochs without replacement), cut into
    batches. Deterministic in ``seed``; the JAX evaluator and the PyTorch baseline both use it.
    """
    if n <= 0 or batch_size <= 0 or steps < 0:
        raise ValueError(
            f"batch_indices: need n, batch_size > 0 and steps >= 0, got {n}, {batch_size}, {steps}"
        )
    rng = np.random.default_rng(seed)
    need = steps * batch_size
    epochs = -(-need // n) if need else 0
    order = (
        np.concatenate([rng.permutation(n) for _ in range(epochs)])
        if epochs
        else np.zeros(0, np.int64)
    )
    return order[:need].reshape(steps, batch_size).astype(np.int32)


def batches(
    x: np.ndarray, y: np.ndarray, batch_size: int, seed: int, steps: int | None = None
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Seeded batch iterator over ``(x, y)`` in the order of :func:`batch_indices`.

    Runs ``steps`` batches, or forever (one epoch of indices at a time) when ``steps`` is None.
    """
    if steps is not None:
        for idx in batch_indices(len(x), batch_size, steps, seed):
            yield x[idx], y[idx]
        return
    epoch = 0
    while True:
        per_epoch = max(len(x) // batch_size, 1)
        for idx in batch_indices(len(x), batch_size, per_epoch, seed + 1_000_003 * epoch):
            yield x[idx], y[idx]
        epoch += 1
