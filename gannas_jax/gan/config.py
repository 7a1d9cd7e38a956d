"""Static GAN settings: a frozen, hashable :class:`GanConfig` that builds networks and optimizers.

The config is part of each compiled program's identity (it rides in :class:`GanState` as a
static field), so it validates everything up front and never changes.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax

from gannas_jax.decode import DECODE_MODES
from gannas_jax.gan.losses import get_loss
from gannas_jax.gan.models import Discriminator, Generator
from gannas_jax.spaces.base import Space

GENERATOR_MODES: tuple[str, ...] = ("straight_through", "reinforce")
NOISE_KINDS: tuple[str, ...] = ("hash", "threefry")


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
        turns it on unless the loss adds a gradient penalty: it keeps the non-saturating,
        LSGAN and hinge critics from memorizing a small real set, while on top of WGAN-GP's
        penalty it over-constrains the critic (see docs/performance.md).
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
        integer hash (two rounds of a 32-bit avalanche finalizer), several times cheaper than
        threefry on CPU inside a scan. ``"threefry"`` uses ``jax.random`` directly. Both are
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
