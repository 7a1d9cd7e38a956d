"""Every row of the NAS-Bench-201 tables round-trips through the official index and string."""

import csv

import numpy as np
import pytest

from gannas_jax import NB201Space
from tests.conftest import NB201_DATASETS


@pytest.mark.parametrize("dataset", NB201_DATASETS)
def test_every_row_matches_official_index_and_string(nb201_dir, dataset):
    space = NB201Space()
    with open(nb201_dir / f"nasbench201_{dataset}.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == space.size
    index = np.asarray([int(r["file id"]) for r in rows])
    strings = [r["arch str"] for r in rows]
    codes = space.from_index(index)  # batched lookup, then one check per row
    for i, s, c in zip(index, strings, codes, strict=True):
        assert space.to_string(space.from_index(int(i))) == s
        np.testing.assert_array_equal(c, space.from_string(s))
        assert space.to_index(space.from_string(s)) == i
    np.testing.assert_array_equal(space.to_index(codes), index)
    assert sorted(index.tolist()) == list(range(space.size))
