"""Layer primitives of the arch-as-data children: pure ``jnp`` functions of NHWC arrays."""

from gannas_jax.child.ops.conv import (
    block_pairs,
    conv_block_pairs,
    conv_blocks,
    conv_same,
    conv_same_nobias,
    conv_strided,
    dense_conv,
)
from gannas_jax.child.ops.layers import TRUNC_STD, batch_norm, lecun_normal_many
from gannas_jax.child.ops.pool import avg_pool_2x2, avg_pool_same, max_pool_2x2, max_pool_same

__all__ = [
    "TRUNC_STD",
    "avg_pool_2x2",
    "avg_pool_same",
    "batch_norm",
    "block_pairs",
    "conv_block_pairs",
    "conv_blocks",
    "conv_same",
    "conv_same_nobias",
    "conv_strided",
    "dense_conv",
    "lecun_normal_many",
    "max_pool_2x2",
    "max_pool_same",
]
