"""The jit-compiled adversarial step: ``n_critic`` discriminator updates, then one generator update.

The step draws the generator's batch once: the generator's forward pass is linearised with
``jax.vjp``, the last critic update sees the (stop-gradient) fakes, and the generator's gradient
is pulled back through the same linearisation after the critic update, as the original PyTorch
loop does with ``fake.detach()``.
"""

from __future__ import annotations

import collections
import functools

import jax
import jax.numpy as jnp
import optax

from gannas_jax.gan.config import GanConfig
from gannas_jax.gan.encoding import encoding
from gannas_jax.gan.losses import get_loss
from gannas_jax.gan.noise import _draws, _streams
from gannas_jax.gan.state import GanState
from gannas_jax.spaces.base import Space

# Incremented when a jitted body is traced (a Python side effect runs at trace time only); the
# tests use it as a recompile guard.
TRACE_COUNTS: collections.Counter = collections.Counter()


def _d_apply(space, config, d_params, x, key):
    """Discriminator logits; dropout is active (with ``key``) only when configured."""
    disc = config.discriminator(space)
    if config.d_dropout > 0:
        return disc.apply(d_params, x, deterministic=False, rngs={"dropout": key})
    return disc.apply(d_params, x)


def _critic_update(state: GanState, d_params, d_opt_state, real, fake, eps, drop_key):
    """One discriminator update on ``real`` and (stop-gradient) ``fake`` encodings.

    ``real``, ``fake``: ``float32[B, N]`` compact encodings. ``eps: float32[B, 1]`` are the
    WGAN-GP interpolation weights (unused by other losses).
    """
    space, config = state.space, state.config
    loss = get_loss(config.loss)
    drop_key, drop_gp_key = jax.random.split(drop_key)
    b = real.shape[0]

    def loss_fn(p):
        # One forward pass over real and fake rows together: fewer, larger matmuls.
        logits = _d_apply(space, config, p, jnp.concatenate([real, fake], axis=0), drop_key)
        real_logits, fake_logits = logits[:b], logits[b:]
        d_loss = loss.d_loss(real_logits, fake_logits)
        aux = {"d_real": jnp.mean(real_logits), "d_fake": jnp.mean(fake_logits)}
        if loss.gradient_penalty:
            mixed = eps * real + (1.0 - eps) * fake
            grads = jax.grad(lambda x: jnp.sum(_d_apply(space, config, p, x, drop_gp_key)))(mixed)
            norms = jnp.sqrt(jnp.sum(jnp.square(grads), axis=-1) + 1e-12)
            gp = jnp.mean(jnp.square(norms - 1.0))
            aux["gradient_penalty"] = gp
            d_loss = d_loss + config.gp_weight * gp
        return d_loss, aux

    (d_loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(d_params)
    _, d_tx = config.optimizers()
    updates, d_opt_state = d_tx.update(grads, d_opt_state, d_params)
    return optax.apply_updates(d_params, updates), d_opt_state, dict(aux, d_loss=d_loss)


def _entropy_bonus(config: GanConfig, enc, logits: jax.Array) -> jax.Array:
    """Mean per-variable entropy of the generator's categoricals; skipped (0) at weight 0."""
    if not config.entropy_weight:
        return jnp.zeros((), logits.dtype)
    return jnp.mean(enc.mean_entropy(logits))


def _step(
    state: GanState,
    key: jax.Array,
    real_onehot: jax.Array,
    num_real: jax.Array,
    draws: tuple[jax.Array, jax.Array] | None = None,
):
    """One adversarial step: ``n_critic`` critic updates, then one generator update.

    The step works on the compact encoding (:mod:`gannas_jax.gan.encoding`): generator logits,
    Gumbel noise, samples and discriminator inputs are all ``[B, N]``.

    Args:
      state: current state.
      key: this step's key.
      real_onehot: ``float32[capacity, N]`` compact one-hot; only the first ``num_real`` rows
        are read.
      num_real: ``int32[]``.
      draws: this step's ``(z, gumbel)`` (:func:`_draws` of its streams) when drawn in advance.

    Returns:
      ``(new_state, metrics)`` with scalar metrics.
    """
    space, config = state.space, state.config
    enc = encoding(space)
    loss = get_loss(config.loss)
    gen = config.generator(space)
    b, nc, n = config.batch_size, config.n_critic, enc.size
    noise, drop_key = _streams(config, key)
    tau = config.temperature(state.step)

    # One draw of Gumbel noise: the critic's fakes and the generator's gradient use the same sample.
    z, gumbel = _draws(space, config, noise) if draws is None else draws
    logits, g_vjp = jax.vjp(lambda p: gen.apply(p, z, compact=True), state.g_params)
    straight = config.generator_mode == "straight_through"

    _, fake = enc.hard(logits + gumbel)

    def relaxed(lg):
        # Straight-through: the value is the hard sample drawn above (lg == logits here), the
        # gradient that of the tempered softmax.
        soft = enc.softmax((lg + gumbel) * (1.0 / tau))
        return fake + soft - jax.lax.stop_gradient(soft)

    d_params, d_opt_state = state.d_params, state.d_opt_state
    metrics = {}
    for j in range(nc):
        if j == nc - 1:
            fake_j = fake
        else:  # earlier critic updates see fresh (gradient-free) generator samples
            zj = noise.normal(2 + 4 * j + 2, (b, config.z_dim))
            lj = gen.apply(state.g_params, zj, compact=True) + noise.gumbel(2 + 4 * j + 3, (b, n))
            fake_j = enc.hard(lj)[1]
        real = real_onehot[noise.randint(2 + 4 * j, (b,), num_real)]
        eps = noise.uniform(2 + 4 * j + 1, (b, 1)) if loss.gradient_penalty else None
        d_params, d_opt_state, metrics = _critic_update(
            state, d_params, d_opt_state, real, fake_j, eps, jax.random.fold_in(drop_key, j)
        )

    g_drop_key = jax.random.fold_in(drop_key, nc)
    baseline = state.baseline
    if straight:

        def g_objective(lg):
            adv = loss.g_loss(_d_apply(space, config, d_params, relaxed(lg), g_drop_key))
            ent = _entropy_bonus(config, enc, lg)
            return adv - config.entropy_weight * ent, (adv, ent)
    else:
        reward = jax.lax.stop_gradient(
            loss.reward(_d_apply(space, config, d_params, fake, g_drop_key))
        )
        mean_reward = jnp.mean(reward)
        # The first step has no history: start the baseline at the batch mean.
        old = jnp.where(state.step == 0, mean_reward, state.baseline)
        advantage = reward - old
        if config.normalize_advantage:
            # Scale-free policy gradient: the entropy bonus keeps the same meaning for every loss.
            advantage = advantage / (jnp.std(reward) + 1e-6)
        baseline = config.baseline_decay * old + (1.0 - config.baseline_decay) * mean_reward

        def g_objective(lg):
            # Mean (not sum) over variables, on the same scale as the entropy bonus.
            logp_a = enc.mean_log_prob(lg, fake)
            surrogate = -jnp.mean(advantage * logp_a)
            ent = _entropy_bonus(config, enc, lg)
            return surrogate - config.entropy_weight * ent, (-mean_reward, ent)

    (_, (g_loss, entropy)), dlogits = jax.value_and_grad(g_objective, has_aux=True)(logits)
    (g_grads,) = g_vjp(dlogits)
    g_tx, _ = config.optimizers()
    updates, g_opt_state = g_tx.update(g_grads, state.g_opt_state, state.g_params)
    g_params = optax.apply_updates(state.g_params, updates)

    new_state = state.replace(
        step=state.step + 1,
        g_params=g_params,
        d_params=d_params,
        g_opt_state=g_opt_state,
        d_opt_state=d_opt_state,
        baseline=baseline,
    )
    metrics = dict(metrics, g_loss=g_loss, temperature=tau)
    if config.entropy_weight:
        metrics["entropy"] = entropy
    return new_state, metrics


def _real_onehot(space: Space, real_padded: jax.Array) -> jax.Array:
    """Compact one-hot ``float32[n, N]`` of the canonical codes."""
    return encoding(space).onehot(space.canonicalize(real_padded))


def _tree_finite(tree) -> jax.Array:
    leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree_util.tree_leaves(tree)]
    return jnp.all(jnp.stack(leaves))


@functools.partial(jax.jit, donate_argnums=(0,))
def gan_step(
    state: GanState, real_padded: jax.Array, num_real: jax.Array, key: jax.Array
) -> tuple[GanState, dict]:
    """One jit-compiled adversarial step (the state is donated).

    Args:
      state: current state.
      real_padded: ``int32[capacity, V]`` real set padded to ``config.real_capacity`` rows
        (see :func:`pad_real`).
      num_real: ``int32[]``, the number of valid rows.
      key: a ``jax.random.key`` for this step.

    Returns:
      ``(new_state, metrics)``, metrics a dict of scalars.
    """
    TRACE_COUNTS["gan_step"] += 1
    return _step(state, key, _real_onehot(state.space, real_padded), num_real)
