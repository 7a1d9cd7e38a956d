"""GAN state, the jit-compiled adversarial step, and ``fit_gan`` (a ``lax.scan`` over steps).

Pure state transitions in the optax / evosax style::

    state = init_gan(key, space, GanConfig())
    state, metrics = fit_gan(state, real_archs, key, num_steps=300)
    archs = generate(state, key, 1000)          # int32[1000, V], canonical
    scores = discriminate(state, archs)         # float32[1000], higher = looks more real

``space`` and ``config`` ride inside :class:`GanState` as static (non-pytree) fields, so every
jitted function is specialised on them through the state's tree structure and needs no extra
static arguments.

The real set is padded to ``config.real_capacity`` rows and passed with its size as a traced
scalar, so real sets of different sizes share one compiled program. Batches of real rows are
drawn uniformly from the valid rows with ``randint(0, num_real)``; padded rows are never read.

One step (``n_critic`` discriminator updates, then one generator update) draws the generator's
batch once: the generator's forward pass is linearised with ``jax.vjp``, the last critic update
sees the (stop-gradient) fakes, and the generator's gradient is pulled back through the same
linearisation after the critic update, as the original PyTorch loop does with
``fake.detach()``.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import math
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax

from gannas_jax.decode import DECODE_MODES, decode
from gannas_jax.gan.encoding import encoding
from gannas_jax.gan.losses import get_loss
from gannas_jax.gan.models import Discriminator, Generator
from gannas_jax.spaces.base import Space

GENERATOR_MODES: tuple[str, ...] = ("straight_through", "reinforce")
NOISE_KINDS: tuple[str, ...] = ("hash", "threefry")

# Incremented when a jitted body is traced (a Python side effect runs at trace time only); the
# tests use it as a recompile guard.
TRACE_COUNTS: collections.Counter = collections.Counter()


def _int_tuple(value, what):
    out = tuple(int(v) for v in value)
    if not out or any(v <= 0 for v in out):
        raise ValueError(
            f"GanConfig: {what} must be a non-empty sequence of positive ints, got {value!r}"
        )
    return out


@dataclasses.dataclass(frozen=True)
class GanConfig:
    """Static GAN settings (frozen and hashable; part of the compiled program's identity).

    Attributes:
      z_dim: generator noise size.
      g_hidden: generator hidden widths.
      g_residual: residual connections between equal-width generator layers.
      d_hidden: discriminator hidden widths.
      d_spectral_norm: spectral normalization in the discriminator. ``None`` (the default)
        turns it on unless the loss adds a gradient penalty: measured here, it keeps the
        non-saturating, LSGAN and hinge critics from memorizing a small real set (mode
        dropping), while on top of WGAN-GP's penalty it over-constrains the critic and the
        generator collapses.
      d_dropout: discriminator dropout rate.
      loss: a name in :data:`gannas_jax.gan.losses.LOSSES`.
      generator_mode: ``"straight_through"`` (gradients through straight-through
        Gumbel-softmax) or ``"reinforce"`` (policy gradient, the discriminator as reward, an
        exponential-moving-average baseline, as in GA-NAS).
      batch_size: generated and real rows per step.
      n_critic: discriminator updates per generator update.
      g_learning_rate: generator Adam learning rate.
      d_learning_rate: discriminator Adam learning rate.
      adam_b1: Adam beta1 (both networks).
      adam_b2: Adam beta2 (both networks).
      entropy_weight: weight of the generator's entropy bonus (mean per-variable entropy of its
        categorical distributions), against mode collapse.
      gp_weight: weight of the WGAN-GP gradient penalty (losses that ask for it).
      tau_start: Gumbel-softmax temperature at step 0.
      tau_end: temperature floor; the temperature decays exponentially towards it.
      tau_decay_steps: steps over which the temperature goes from ``tau_start`` to ``tau_end``.
      baseline_decay: EMA decay of the REINFORCE reward baseline.
      normalize_advantage: divide REINFORCE advantages by the batch's reward standard deviation.
      real_capacity: the real set is padded to this many rows (larger sets raise).
      sample_mode: decode mode of :func:`generate` (see :data:`gannas_jax.decode.DECODE_MODES`).
      noise: how a training step draws its bulk noise (generator ``z``, Gumbel noise, batch
        indices). ``"hash"``: one ``jax.random.bits`` call per step seeds a counter-based
        integer hash (two rounds of a 32-bit avalanche finalizer). Measured on this project's
        2-core CPU inside the training scan: 64x100 random words 5.6 us against 69 us for
        threefry (whose CPU lowering is a rolled loop), normals 30 against 106 us, Gumbel
        noise 15 against 60 us. ``"threefry"`` uses ``jax.random`` directly. Both are
        deterministic given the key.
    """

    z_dim: int = 100
    g_hidden: tuple[int, ...] = (256,)
    g_residual: bool = False
    d_hidden: tuple[int, ...] = (256,)
    d_spectral_norm: bool | None = None
    d_dropout: float = 0.0
    loss: str = "nonsaturating"
    generator_mode: str = "straight_through"
    batch_size: int = 64
    n_critic: int = 1
    g_learning_rate: float = 1e-3
    d_learning_rate: float = 1e-3
    adam_b1: float = 0.5
    adam_b2: float = 0.999
    entropy_weight: float = 0.01
    gp_weight: float = 10.0
    tau_start: float = 1.0
    tau_end: float = 0.5
    tau_decay_steps: int = 1000
    baseline_decay: float = 0.9
    normalize_advantage: bool = True
    real_capacity: int = 512
    sample_mode: str = "gumbel_max"
    noise: str = "hash"

    def __post_init__(self):
        object.__setattr__(self, "g_hidden", _int_tuple(self.g_hidden, "g_hidden"))
        object.__setattr__(self, "d_hidden", _int_tuple(self.d_hidden, "d_hidden"))
        get_loss(self.loss)  # raises on an unknown name
        if self.generator_mode not in GENERATOR_MODES:
            raise ValueError(
                f"GanConfig: generator_mode {self.generator_mode!r} is not one of "
                f"{list(GENERATOR_MODES)}"
            )
        if self.noise not in NOISE_KINDS:
            raise ValueError(f"GanConfig: noise {self.noise!r} is not one of {list(NOISE_KINDS)}")
        if self.sample_mode not in DECODE_MODES:
            raise ValueError(
                f"GanConfig: sample_mode {self.sample_mode!r} is not one of {list(DECODE_MODES)}"
            )
        for name in ("z_dim", "batch_size", "n_critic", "real_capacity", "tau_decay_steps"):
            v = getattr(self, name)
            if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < 1:
                raise ValueError(f"GanConfig: {name} must be a positive int, got {v!r}")
        if not 0.0 <= self.d_dropout < 1.0:
            raise ValueError(f"GanConfig: d_dropout must be in [0, 1), got {self.d_dropout!r}")
        if not 0.0 < self.tau_end <= self.tau_start:
            raise ValueError(
                f"GanConfig: need 0 < tau_end <= tau_start, got {self.tau_end}, {self.tau_start}"
            )

    def generator(self, space: Space) -> Generator:
        return Generator(space=space, hidden=self.g_hidden, residual=self.g_residual)

    @property
    def spectral_norm(self) -> bool:
        """Whether the discriminator is spectrally normalized (``d_spectral_norm`` resolved)."""
        if self.d_spectral_norm is None:
            return not get_loss(self.loss).gradient_penalty
        return bool(self.d_spectral_norm)

    def discriminator(self, space: Space) -> Discriminator:
        return Discriminator(
            space=space,
            hidden=self.d_hidden,
            spectral_norm=self.spectral_norm,
            dropout=self.d_dropout,
        )

    def optimizers(self) -> tuple[optax.GradientTransformation, optax.GradientTransformation]:
        """(generator, discriminator) optimizers."""
        return (
            optax.adam(self.g_learning_rate, self.adam_b1, self.adam_b2),
            optax.adam(self.d_learning_rate, self.adam_b1, self.adam_b2),
        )

    def temperature(self, step: jax.Array) -> jax.Array:
        """Gumbel-softmax temperature at global step ``step``: exponential decay to a floor."""
        rate = math.log(self.tau_start / self.tau_end) / self.tau_decay_steps
        tau = self.tau_start * jnp.exp(-rate * step.astype(jnp.float32))
        return jnp.maximum(tau, jnp.float32(self.tau_end))


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


# --- per-step noise ---------------------------------------------------------------------------------


def _avalanche(x: jax.Array) -> jax.Array:
    """A 32-bit integer finalizer with full avalanche (``lowbias32``, C. Wellons)."""
    x = x ^ (x >> 16)
    x = x * jnp.uint32(0x7FEB352D)
    x = x ^ (x >> 15)
    x = x * jnp.uint32(0x846CA68B)
    return x ^ (x >> 16)


class _Noise:
    """The noise of one training step: ``num_streams`` independent streams from one key.

    With ``config.noise == "hash"`` stream ``i`` is ``h(counter; s_i0, s_i1)`` with the seeds
    drawn by a single ``jax.random.bits`` call; with ``"threefry"`` each stream is a
    ``jax.random.split`` subkey used with ``jax.random`` directly.
    """

    def __init__(self, key: jax.Array, kind: str, num_streams: int):
        self.kind = kind
        if kind == "hash":
            self.seeds = jax.random.bits(key, (num_streams, 2), jnp.uint32)
        else:
            self.keys = jax.random.split(key, num_streams)

    def _bits(self, i: int, shape: tuple[int, ...]) -> jax.Array:
        size = math.prod(shape)
        x = (
            jax.lax.iota(jnp.uint32, size).reshape(shape) * jnp.uint32(0x9E3779B9)
            + self.seeds[i, 0]
        )
        return _avalanche(_avalanche(x) ^ self.seeds[i, 1])

    def _open_uniform(self, i, shape):
        # 23 random bits, centred in their bin: k + 0.5 needs 24 significant bits, so it is exact
        # in float32 and the result lies strictly inside (0, 1) (24 bits would round to 1.0).
        return ((self._bits(i, shape) >> 9).astype(jnp.float32) + 0.5) * jnp.float32(2.0**-23)

    def uniform(self, i: int, shape: tuple[int, ...]) -> jax.Array:
        if self.kind == "hash":
            return self._open_uniform(i, shape)
        return jax.random.uniform(self.keys[i], shape, jnp.float32)

    def normal(self, i: int, shape: tuple[int, ...]) -> jax.Array:
        if self.kind == "hash":
            u = self._open_uniform(i, shape)
            return jnp.float32(math.sqrt(2.0)) * jax.lax.erf_inv(2.0 * u - 1.0)
        return jax.random.normal(self.keys[i], shape, jnp.float32)

    def gumbel(self, i: int, shape: tuple[int, ...]) -> jax.Array:
        if self.kind == "hash":
            return -jnp.log(-jnp.log(self._open_uniform(i, shape)))
        return jax.random.gumbel(self.keys[i], shape, jnp.float32)

    def randint(self, i: int, shape: tuple[int, ...], maxval: jax.Array) -> jax.Array:
        """Uniform ints in ``[0, maxval)``, ``maxval`` a traced positive int."""
        if self.kind == "hash":
            # 23-bit uniforms: relative bias below maxval * 2**-23.
            u = self._open_uniform(i, shape)
            return jnp.minimum((u * maxval.astype(jnp.float32)).astype(jnp.int32), maxval - 1)
        return jax.random.randint(self.keys[i], shape, 0, maxval)


# --- one step -------------------------------------------------------------------------------------


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


def _streams(config: GanConfig, key: jax.Array) -> tuple[_Noise, jax.Array]:
    """The noise streams and the dropout key of the step with key ``key``."""
    noise_key, drop_key = jax.random.split(key)
    # Streams: 0 z, 1 Gumbel, then per critic update: real rows, GP weights, extra z, extra Gumbel.
    return _Noise(noise_key, config.noise, 2 + 4 * config.n_critic), drop_key


def _draws(space: Space, config: GanConfig, noise: _Noise) -> tuple[jax.Array, jax.Array]:
    """The generator batch's noise ``z [B, z_dim]`` and Gumbel noise ``[B, N]`` of a step."""
    b = config.batch_size
    return noise.normal(0, (b, config.z_dim)), noise.gumbel(1, (b, encoding(space).size))


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
    # a wide kernel over the cores, and inside the step it computed z twice, fused into two
    # consumers (measured on the default SequentialSpace: ~90 us of a ~900 us step was noise).
    def run_chunk(s, _):
        keys = jax.vmap(lambda t: jax.random.fold_in(key, t))(s.step + jnp.arange(chunk))
        zs, gumbels = jax.vmap(lambda k: _draws(space, config, _streams(config, k)[0]))(keys)

        def body(s, xs):
            k, z, g = xs
            return _step(s, k, real_onehot, num_real, (z, g))

        # Two steps per loop iteration: measured +5-13% steps/s on this 2-core CPU (NB201 and
        # SequentialSpace; 4 was slower). XLA fuses and rounds the unrolled body differently, so
        # results differ in the last bits from unroll=1, but they are still deterministic.
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


# --- sampling and scoring -------------------------------------------------------------------------


def _bucket(n: int) -> int:
    """Pads batch sizes to powers of two (at least 64) so varying sizes compile few programs."""
    return max(64, 1 << (int(n) - 1).bit_length())


@functools.partial(jax.jit, static_argnums=(2, 3, 4))
def _generate(g_params, key, space, config, n):
    TRACE_COUNTS["generate"] += 1
    z_key, decode_key = jax.random.split(key)
    z = jax.random.normal(z_key, (n, config.z_dim), jnp.float32)
    logits = config.generator(space).apply(g_params, z)
    return decode(decode_key, logits, space, config.sample_mode).archs


def generate(state: GanState, key: jax.Array, n: int) -> jax.Array:
    """Samples ``n`` canonical architectures from the generator.

    Args:
      state: a GAN state.
      key: a ``jax.random.key``.
      n: number of architectures (compiled per power-of-two bucket of ``n``).

    Returns:
      ``int32[n, V]`` canonical codes, decoded with ``config.sample_mode``.
    """
    if not isinstance(n, (int, np.integer)) or isinstance(n, bool) or n < 0:
        raise ValueError(f"generate: n must be a non-negative int, got {n!r}")
    out = _generate(state.g_params, key, state.space, state.config, _bucket(max(int(n), 1)))
    return out[: int(n)]


@functools.partial(jax.jit, static_argnums=(2, 3))
def _discriminate(d_params, archs, space, config):
    TRACE_COUNTS["discriminate"] += 1
    return config.discriminator(space).apply(
        d_params, _real_onehot(space, archs), deterministic=True
    )


def discriminate(state: GanState, archs: Any) -> jax.Array:
    """Discriminator scores (logits) of architectures; higher means closer to the real set.

    Args:
      state: a GAN state.
      archs: ``int[n, V]`` codes (canonicalized before scoring).

    Returns:
      ``float32[n]``.
    """
    space = state.space
    if isinstance(archs, jax.core.Tracer):
        raise TypeError("discriminate: call it on concrete architectures (it jits internally)")
    arr = space.validate(archs)
    if arr.ndim != 2:
        raise ValueError(
            f"discriminate: archs must have shape [n, {space.num_variables}], got {arr.shape}"
        )
    n = arr.shape[0]
    padded = np.zeros((_bucket(max(n, 1)), space.num_variables), np.int32)
    padded[:n] = arr
    return _discriminate(state.d_params, padded, space, state.config)[:n]
