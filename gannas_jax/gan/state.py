"""The adversarial training state and its initialisation.

``space`` and ``config`` ride inside :class:`GanState` as static (non-pytree) fields, so every
jitted function is specialised on them through the state's tree structure and needs no extra
static arguments.
"""

from __future__ import annotations

import functools
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp

from gannas_jax.gan.config import GanConfig
from gannas_jax.spaces.base import Space


@flax.struct.dataclass
class GanState:
    """Everything the adversarial training carries between steps."""

    step: jax.Array  # int32[], generator updates done so far
    g_params: Any  # generator parameter pytree
    d_params: Any  # discriminator parameter pytree
    g_opt_state: Any  # optax state of the generator
    d_opt_state: Any  # optax state of the discriminator
    baseline: jax.Array  # float32[], EMA of the REINFORCE reward (unused in straight_through)
    space: Space = flax.struct.field(pytree_node=False)
    config: GanConfig = flax.struct.field(pytree_node=False)


def init_gan(key: jax.Array, space: Space, config: GanConfig = GanConfig()) -> GanState:
    """Initialises generator, discriminator and their optimizers.

    Args:
      key: a ``jax.random.key``.
      space: the search space (static).
      config: static settings.

    Returns:
      A fresh :class:`GanState` at step 0.
    """
    if not isinstance(space, Space):
        raise TypeError(f"init_gan: space must be a Space, got {type(space).__name__}")
    if not isinstance(config, GanConfig):
        raise TypeError(f"init_gan: config must be a GanConfig, got {type(config).__name__}")
    return _init(key, space, config)


@functools.partial(jax.jit, static_argnums=(1, 2))
def _init(key, space, config):
    g_key, d_key = jax.random.split(key)
    z = jnp.zeros((1, config.z_dim), jnp.float32)
    x = jnp.zeros((1, space.num_variables, space.max_cardinality), jnp.float32)
    g_params = config.generator(space).init(g_key, z)
    d_params = config.discriminator(space).init(d_key, x)
    g_tx, d_tx = config.optimizers()
    return GanState(
        step=jnp.zeros((), jnp.int32),
        g_params=g_params,
        d_params=d_params,
        g_opt_state=g_tx.init(g_params),
        d_opt_state=d_tx.init(d_params),
        baseline=jnp.zeros((), jnp.float32),
        space=space,
        config=config,
    )
