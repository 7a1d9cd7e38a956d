"""``fit_gan``: many adversarial steps as one compiled ``lax.scan``, with real-set padding.

The real set is padded to ``config.real_capacity`` rows and passed with its size as a traced
scalar, so real sets of different sizes share one compiled program. Batches of real rows are
drawn uniformly from the valid rows; padded rows are never read.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from gannas_jax.gan.config import GanConfig
from gannas_jax.gan.noise import _draws, _streams
from gannas_jax.gan.state import GanState
from gannas_jax.gan.step import TRACE_COUNTS, _real_onehot, _step, _tree_finite
from gannas_jax.spaces.base import Space


def _draw_chunk(num_steps: int) -> int:
    """Steps whose noise :func:`_fit` draws at once: the largest divisor of ``num_steps`` <= 50."""
    return max(c for c in range(1, min(num_steps, 50) + 1) if num_steps % c == 0)


@functools.partial(jax.jit, static_argnames=("num_steps",))
def _fit(state, real_padded, num_real, key, num_steps):
    TRACE_COUNTS["fit_gan"] += 1
    space, config = state.space, state.config
    real_onehot = _real_onehot(space, real_padded)
    chunk = _draw_chunk(num_steps)

    # The generator noise and Gumbel noise of ``chunk`` steps are drawn by one wide elementwise
    # kernel before the steps run (the same values each step would draw itself): XLA:CPU spreads
    # a wide kernel over the cores, and inside the step it would compute z twice, fused into two
    # consumers.
    def run_chunk(s, _):
        keys = jax.vmap(lambda t: jax.random.fold_in(key, t))(s.step + jnp.arange(chunk))
        zs, gumbels = jax.vmap(lambda k: _draws(space, config, _streams(config, k)[0]))(keys)

        def body(s, xs):
            k, z, g = xs
            return _step(s, k, real_onehot, num_real, (z, g))

        # Two steps per loop iteration are faster on CPU (docs/performance.md). XLA fuses and
        # rounds the unrolled body differently, so results differ in the last bits from
        # unroll=1, but they are still deterministic.
        return jax.lax.scan(body, s, (keys, zs, gumbels), unroll=2)

    new_state, metrics = jax.lax.scan(run_chunk, state, length=num_steps // chunk)
    metrics = jax.tree.map(lambda m: m.reshape((num_steps,) + m.shape[2:]), metrics)
    finite = _tree_finite((new_state.g_params, new_state.d_params))
    return new_state, metrics, finite


def pad_real(space: Space, config: GanConfig, real_archs: Any) -> tuple[np.ndarray, np.ndarray]:
    """Validates a real set and pads it to ``config.real_capacity`` rows.

    Args:
      space: the search space.
      config: static settings.
      real_archs: ``int[n, V]`` architectures, ``1 <= n <= config.real_capacity``.

    Returns:
      ``(int32[capacity, V], int32[])``: padded codes (zeros below row ``n``) and ``n``.

    Raises:
      ValueError: bad shape or codes, an empty set, or more rows than the capacity.
    """
    real = space.validate(real_archs)
    if real.ndim != 2:
        raise ValueError(
            f"fit_gan: real_archs must have shape [n, {space.num_variables}], got {real.shape}"
        )
    n = real.shape[0]
    if n == 0:
        raise ValueError("fit_gan: the real set is empty")
    if n > config.real_capacity:
        raise ValueError(
            f"fit_gan: {n} real architectures exceed real_capacity={config.real_capacity}; "
            "raise GanConfig.real_capacity"
        )
    padded = np.zeros((config.real_capacity, space.num_variables), np.int32)
    padded[:n] = real
    return padded, np.asarray(n, np.int32)


def fit_gan(
    state: GanState, real_archs: Any, key: jax.Array, num_steps: int
) -> tuple[GanState, dict[str, jax.Array]]:
    """Runs ``num_steps`` adversarial steps as one compiled ``lax.scan``.

    The program is compiled once per (space, config, num_steps); real sets of any size up to
    ``config.real_capacity`` reuse it. Step ``t`` (global) uses ``fold_in(key, t)``.

    Args:
      state: current state (left valid: it is not donated, so a failure leaves it usable).
      real_archs: ``int[n, V]`` the architectures to imitate.
      key: a ``jax.random.key``.
      num_steps: number of steps (static).

    Returns:
      ``(new_state, metrics)``: metrics maps names (``d_loss``, ``g_loss``, ``d_real``,
      ``d_fake``, ``temperature``, ``entropy`` when ``entropy_weight > 0`` and, for WGAN-GP,
      ``gradient_penalty``) to
      ``float32[num_steps]``.

    Raises:
      FloatingPointError: a loss became non-finite (the message names the loss and the step) or
        the parameters did; no state is returned then.
    """
    if not isinstance(num_steps, (int, np.integer)) or isinstance(num_steps, bool) or num_steps < 1:
        raise ValueError(f"fit_gan: num_steps must be a positive int, got {num_steps!r}")
    padded, n = pad_real(state.space, state.config, real_archs)
    new_state, metrics, finite = _fit(state, padded, n, key, num_steps=int(num_steps))
    host = jax.device_get({k: metrics[k] for k in ("d_loss", "g_loss")})
    start = int(state.step)
    names = {"d_loss": "discriminator", "g_loss": "generator"}
    bad = {k: np.flatnonzero(~np.isfinite(v)) for k, v in host.items()}
    bad = {k: int(v[0]) for k, v in bad.items() if v.size}
    if bad:
        k = min(bad, key=bad.get)
        i = bad[k]
        raise FloatingPointError(
            f"fit_gan: the {names[k]} loss ({k}, {state.config.loss!r}) became non-finite "
            f"({host[k][i]}) at step {start + i} (step {i} of this call of {num_steps}); "
            "the state was not updated. Lower the learning rates or change the loss."
        )
    if not bool(finite):
        raise FloatingPointError(
            f"fit_gan: parameters became non-finite in the last step ({start + num_steps - 1}) "
            "although the losses were finite; the state was not updated."
        )
    return new_state, metrics
