"""The GAN's compact encoding against the dense one-hot it replaces."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gannas_jax import GanConfig, NB201Space, SequentialSpace
from gannas_jax.decode import MASKED_LOGIT, mask_logits, masked_entropy
from gannas_jax.gan.encoding import encoding

SPACES = [
    SequentialSpace(),
    NB201Space(),
    SequentialSpace(
        input_shape=(8, 8, 1),
        num_stages=2,
        slots_per_stage=3,
        kernel_sizes=(3, 5, 7),
        channels=(8, 16, 32),
        num_fc=2,
        fc_widths=(32, 64, 128),
    ),
]
IDS = ["sequential", "nb201", "sequential-digits"]


@pytest.mark.parametrize("space", SPACES, ids=IDS)
def test_sizes_and_round_trip(space):
    enc = encoding(space)
    assert enc.size == int(np.sum(space.cardinalities)) == int(space.mask.sum())
    dense = jax.random.normal(jax.random.key(0), (5, space.num_variables, space.max_cardinality))
    compact = enc.compress(dense)
    chex.assert_shape(compact, (5, enc.size))
    back = enc.expand(compact)
    np.testing.assert_array_equal(np.asarray(back), np.asarray(mask_logits(space, dense)))
    np.testing.assert_array_equal(np.asarray(enc.compress(back)), np.asarray(compact))
    assert enc.identity == bool(space.mask.all())


@pytest.mark.parametrize("space", SPACES, ids=IDS)
def test_block_ops_match_the_dense_ones(space):
    enc = encoding(space)
    archs = space.sample(jax.random.key(1), 16)
    dense_onehot = space.onehot(archs)
    np.testing.assert_array_equal(
        np.asarray(enc.onehot(archs)), np.asarray(enc.compress(dense_onehot))
    )

    logits = jax.random.normal(jax.random.key(2), (16, enc.size)) * 3.0
    dense_logits = enc.expand(logits)
    codes, hot = enc.hard(logits)
    np.testing.assert_array_equal(np.asarray(codes), np.asarray(jnp.argmax(dense_logits, -1)))
    np.testing.assert_array_equal(
        np.asarray(enc.expand(hot, 0.0)), np.asarray(jax.nn.one_hot(codes, space.max_cardinality))
    )
    np.testing.assert_allclose(
        np.asarray(enc.expand(enc.softmax(logits), 0.0)),
        np.asarray(jax.nn.softmax(dense_logits, -1)),
        rtol=1e-6,
        atol=1e-7,
    )
    np.testing.assert_allclose(
        np.asarray(enc.mean_entropy(logits)),
        np.asarray(masked_entropy(space, dense_logits)),
        rtol=1e-5,
        atol=1e-6,
    )
    logp = jax.nn.log_softmax(dense_logits, -1)
    expected = jnp.mean(jnp.take_along_axis(logp, codes[..., None], -1)[..., 0], -1)
    np.testing.assert_allclose(
        np.asarray(enc.mean_log_prob(logits, hot)), np.asarray(expected), rtol=1e-5
    )


@pytest.mark.parametrize("space", SPACES[:2], ids=IDS[:2])
def test_models_accept_both_forms(space):
    config = GanConfig(z_dim=8, g_hidden=(16,), d_hidden=(16,))
    gen, disc = config.generator(space), config.discriminator(space)
    z = jax.random.normal(jax.random.key(3), (4, 8))
    g_params = gen.init(jax.random.key(4), z)
    dense = gen.apply(g_params, z)
    compact = gen.apply(g_params, z, compact=True)
    chex.assert_shape(dense, (4, space.num_variables, space.max_cardinality))
    chex.assert_shape(compact, (4, encoding(space).size))
    np.testing.assert_array_equal(np.asarray(dense), np.asarray(encoding(space).expand(compact)))
    assert np.all(np.asarray(dense)[:, ~space.mask] == MASKED_LOGIT)

    onehot = space.onehot(space.sample(jax.random.key(5), 4))
    d_params = disc.init(jax.random.key(6), onehot)
    np.testing.assert_array_equal(
        np.asarray(disc.apply(d_params, onehot)),
        np.asarray(disc.apply(d_params, encoding(space).compress(onehot))),
    )
