"""Property tests for the search spaces (both spaces, parametrized)."""

import functools
import itertools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gannas_jax import NB201Space, SequentialSpace

SPACES = {
    "nb201": NB201Space(),
    "sequential": SequentialSpace(),
    "sequential_wide": SequentialSpace(
        input_shape=(16, 16, 3),
        num_stages=3,
        slots_per_stage=2,
        kernel_sizes=(3, 5),
        channels=(4, 8, 16, 32),
        num_fc=1,
        fc_widths=(16, 32, 64, 128, 256, 512, 1024, 2048),
    ),
}
PROFILE = settings(max_examples=40, deadline=None)


def raw_archs(space, max_n=6):
    """Any codes in range, canonical or not, as a [n, V] array."""
    row = st.tuples(*[st.integers(0, c - 1) for c in space.cardinalities])
    return st.lists(row, min_size=1, max_size=max_n).map(lambda r: np.asarray(r, np.int32))


@pytest.fixture(params=list(SPACES), ids=list(SPACES))
def space(request):
    return SPACES[request.param]


def _given_raw(test):
    """Runs `test(space, archs)` for each space with hypothesis-drawn raw architectures."""

    def wrapper(space):
        @PROFILE
        @given(raw_archs(space))
        def inner(archs):
            test(space, archs)

        inner()

    wrapper.__name__ = test.__name__
    return wrapper


@functools.cache
def _jit_canonicalize(space):
    return jax.jit(space.canonicalize)


@_given_raw
def test_canonicalize_idempotent(space, archs):
    canon = _jit_canonicalize(space)
    once = np.asarray(canon(archs))
    space.validate(once)
    np.testing.assert_array_equal(np.asarray(canon(once)), once)
    # The host (NumPy) and traced (jnp) paths agree.
    np.testing.assert_array_equal(space.canonicalize(archs), once)


@_given_raw
def test_canonicalize_vmap_equals_loop(space, archs):
    batched = jax.vmap(_jit_canonicalize(space))(jnp.asarray(archs))
    looped = jnp.stack([_jit_canonicalize(space)(jnp.asarray(a)) for a in archs])
    chex.assert_trees_all_equal(batched, looped)


@_given_raw
def test_string_and_spec_round_trip(space, archs):
    for arch in np.asarray(space.canonicalize(archs)):
        s = space.to_string(arch)
        np.testing.assert_array_equal(space.from_string(s), arch, err_msg=s)
        np.testing.assert_array_equal(space.from_spec(space.to_spec(arch)), arch)


@_given_raw
def test_onehot_respects_mask(space, archs):
    oh = np.asarray(space.onehot(archs))
    chex.assert_shape(oh, (len(archs), space.num_variables, space.max_cardinality))
    assert np.all(oh[:, ~space.mask] == 0)
    np.testing.assert_array_equal(oh.sum(-1), 1.0)
    np.testing.assert_array_equal(oh.argmax(-1), archs)


@PROFILE
@given(seed=st.integers(0, 2**31 - 1), n=st.sampled_from([1, 7, 64]))
def test_samples_are_valid_and_canonical(seed, n):
    for space in SPACES.values():
        archs = np.asarray(space.sample(jax.random.key(seed), n))
        chex.assert_shape(archs, (n, space.num_variables))
        assert archs.dtype == np.int32
        space.validate(archs)
        np.testing.assert_array_equal(np.asarray(space.canonicalize(archs)), archs)


def test_sample_is_deterministic_per_key(space):
    a = space.sample(jax.random.key(3), 16)
    b = space.sample(jax.random.key(3), 16)
    c = space.sample(jax.random.key(4), 16)
    chex.assert_trees_all_equal(a, b)
    assert not np.array_equal(np.asarray(a), np.asarray(c))


def test_mask_matches_cardinalities(space):
    chex.assert_shape(space.mask, (space.num_variables, space.max_cardinality))
    np.testing.assert_array_equal(space.mask.sum(1), space.cardinalities)
    assert len(space.variable_names) == space.num_variables


def test_spaces_are_hashable_static_args():
    a, b = SequentialSpace(channels=[8, 16]), SequentialSpace(channels=(8, 16))
    assert a == b and hash(a) == hash(b)
    assert hash(NB201Space()) == hash(NB201Space())


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(
            input_shape=(4, 4, 1),
            num_stages=2,
            slots_per_stage=2,
            kernel_sizes=(3,),
            channels=(4, 8),
            num_fc=1,
            fc_widths=(4,),
        ),
        dict(
            input_shape=(2, 2, 1),
            num_stages=1,
            slots_per_stage=3,
            kernel_sizes=(3, 5),
            channels=(4,),
            num_fc=2,
            fc_widths=(4, 8),
        ),
    ],
)
def test_sequential_size_equals_brute_force(kwargs):
    space = SequentialSpace(**kwargs)
    grid = np.asarray(list(itertools.product(*[range(c) for c in space.cardinalities])), np.int32)
    canon = np.asarray(jax.jit(space.canonicalize)(grid))
    assert len(np.unique(canon, axis=0)) == space.size


def test_sequential_canonical_examples():
    space = SequentialSpace()
    a = space.from_string("[conv5x5-16 relu] [max_pool] [fc64-tanh]")
    # The same network, with empty slots in front and junk in unused hyperparameters.
    b = np.asarray(a).copy()
    stage, head = space.split(b)
    stage = stage.copy()
    stage[0] = np.stack([np.array([0, 2, 1]), stage[0, 0].copy(), stage[0, 1].copy()])
    stage[1, 0] = (2, 2, 2)
    b = np.concatenate([stage.reshape(-1), head.reshape(-1)])
    np.testing.assert_array_equal(np.asarray(space.canonicalize(b)), a)
    assert space.to_string(b) == "[conv5x5-16 relu] [max_pool] [fc64-tanh]"


def test_nb201_size_and_isomorphism_classes():
    from gannas_jax import isomorphism_key

    space = NB201Space()
    assert space.size == 15625
    keys = {isomorphism_key(space.from_index(i)) for i in range(space.size)}
    assert len(keys) == 6466
