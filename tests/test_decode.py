"""Decoding logits into architectures: vmap equals a loop, masks hold, output is canonical."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gannas_jax import NB201Space, SequentialSpace
from gannas_jax.decode import (
    DECODE_MODES,
    MASKED_LOGIT,
    decode,
    decode_one,
    mask_logits,
    masked_entropy,
)

SPACES = {
    "nb201": NB201Space(),
    "sequential": SequentialSpace(num_stages=2, slots_per_stage=2, num_fc=1),
}


@pytest.fixture(params=list(SPACES), ids=list(SPACES), scope="module")
def space(request):
    return SPACES[request.param]


def _logits(space, n, seed=0):
    return 3.0 * jax.random.normal(
        jax.random.key(seed), (n, space.num_variables, space.max_cardinality)
    )


@pytest.mark.parametrize("mode", DECODE_MODES)
def test_vmap_equals_python_loop(space, mode):
    key = jax.random.key(1)
    logits = _logits(space, 5)
    batched = decode(key, logits, space, mode, 0.7)
    keys = jax.random.split(key, 5)
    for i in range(5):
        one = decode_one(keys[i], logits[i], space, mode, 0.7)
        for field in ("archs", "raw", "onehot"):
            np.testing.assert_array_equal(
                np.asarray(getattr(batched, field)[i]), np.asarray(getattr(one, field))
            )


@pytest.mark.parametrize("mode", DECODE_MODES)
def test_decoded_are_valid_and_canonical(space, mode):
    # Push mass onto choices that do not exist: masking must still keep every code in range.
    logits = _logits(space, 64) + 50.0 * jnp.asarray(~space.mask, jnp.float32)[None]
    out = decode(jax.random.key(2), logits, space, mode, 0.5)
    chex.assert_shape(out.archs, (64, space.num_variables))
    chex.assert_type(out.archs, jnp.int32)
    archs = space.validate(np.asarray(out.archs))
    space.validate(np.asarray(out.raw))
    np.testing.assert_array_equal(np.asarray(space.canonicalize(archs)), archs)
    np.testing.assert_array_equal(np.asarray(space.canonicalize(out.raw)), archs)
    # The encoding is the one-hot of the raw choices (values: straight-through adds zero).
    np.testing.assert_allclose(
        np.asarray(out.onehot),
        np.asarray(jax.nn.one_hot(out.raw, space.max_cardinality)),
        atol=1e-6,
    )


def test_argmax_mode_is_deterministic_argmax(space):
    logits = _logits(space, 8)
    out = decode(jax.random.key(0), logits, space, "argmax")
    other = decode(jax.random.key(99), logits, space, "argmax")
    np.testing.assert_array_equal(np.asarray(out.raw), np.asarray(other.raw))
    np.testing.assert_array_equal(
        np.asarray(out.raw), np.asarray(jnp.argmax(mask_logits(space, logits), -1))
    )


def test_gumbel_max_samples_the_softmax():
    space = NB201Space()
    probs = np.asarray([0.5, 0.25, 0.15, 0.1, 0.0])
    logits = jnp.broadcast_to(jnp.log(jnp.asarray(probs) + 1e-30), (4000, 6, 5))
    raw = np.asarray(decode(jax.random.key(3), logits, space, "gumbel_max").raw)
    freq = np.bincount(raw.ravel(), minlength=5) / raw.size
    np.testing.assert_allclose(freq, probs, atol=0.02)


def test_straight_through_gradient_is_the_softmax_gradient(space):
    logits = _logits(space, 3)
    key, tau = jax.random.key(4), 0.8
    w = jax.random.normal(jax.random.key(5), logits.shape)
    g_st = jax.grad(lambda lg: jnp.sum(w * decode(key, lg, space, "gumbel_softmax", tau).onehot))(
        logits
    )
    keys = jax.random.split(key, 3)
    gumbel = jax.vmap(lambda k: jax.random.gumbel(k, logits.shape[1:]))(keys)

    def soft(lg):
        return jnp.sum(w * jax.nn.softmax((mask_logits(space, lg) + gumbel) / tau, axis=-1))

    np.testing.assert_allclose(
        np.asarray(g_st), np.asarray(jax.grad(soft)(logits)), rtol=1e-5, atol=1e-6
    )
    assert np.all(np.isfinite(np.asarray(g_st)))


def test_masked_entropy_ignores_missing_choices():
    space = SequentialSpace()
    logits = jnp.zeros((2, space.num_variables, space.max_cardinality))
    ent = np.asarray(masked_entropy(space, logits))
    expected = np.mean(np.log(np.asarray(space.cardinalities)))
    np.testing.assert_allclose(ent, [expected, expected], rtol=1e-6)
    assert float(MASKED_LOGIT) < -1e8


def test_bad_mode_and_shape_raise():
    space = NB201Space()
    with pytest.raises(ValueError, match="unknown mode"):
        decode(jax.random.key(0), _logits(space, 2), space, "nucleus")
    with pytest.raises(ValueError, match=r"\[n, 6, 5\]"):
        decode(jax.random.key(0), jnp.zeros((2, 5, 5)), space)
