"""Adversarial losses, as a registry.

Every loss works on discriminator logits (unbounded scores) and provides:

* ``d_loss(real, fake)``: the discriminator's loss, mean over the batch;
* ``g_loss(fake)``: the generator's loss for gradients through the samples
  (``straight_through`` mode);
* ``reward(fake)``: a per-sample reward for the policy gradient (``reinforce`` mode), higher
  for samples the discriminator takes for real.

``gradient_penalty`` asks the training step to add a WGAN-GP penalty on interpolated encodings.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import jax
import jax.numpy as jnp


@dataclasses.dataclass(frozen=True)
class GanLoss:
    """One adversarial loss.

    Attributes:
      name: registry key.
      d_loss: ``(real float32[n], fake float32[m]) -> float32[]``.
      g_loss: ``(fake float32[m]) -> float32[]``.
      reward: ``(fake float32[m]) -> float32[m]``.
      gradient_penalty: add the WGAN-GP penalty to ``d_loss``.
    """

    name: str
    d_loss: Callable[[jax.Array, jax.Array], jax.Array]
    g_loss: Callable[[jax.Array], jax.Array]
    reward: Callable[[jax.Array], jax.Array]
    gradient_penalty: bool = False


LOSSES: dict[str, GanLoss] = {}


def register_loss(loss: GanLoss) -> GanLoss:
    """Adds ``loss`` to :data:`LOSSES` under ``loss.name`` and returns it."""
    if loss.name in LOSSES:
        raise ValueError(f"register_loss: a loss named {loss.name!r} is already registered")
    LOSSES[loss.name] = loss
    return loss


def get_loss(name: str) -> GanLoss:
    """Looks a loss up by name.

    Raises:
      ValueError: unknown name (the message lists the registered ones).
    """
    try:
        return LOSSES[name]
    except KeyError:
        raise ValueError(f"unknown GAN loss {name!r}; registered: {sorted(LOSSES)}") from None


# Non-saturating (Goodfellow et al. 2014), the original: binary cross-entropy on logits.
register_loss(
    GanLoss(
        name="nonsaturating",
        d_loss=lambda real, fake: (
            jnp.mean(jax.nn.softplus(-real)) + jnp.mean(jax.nn.softplus(fake))
        ),
        g_loss=lambda fake: jnp.mean(jax.nn.softplus(-fake)),
        reward=jax.nn.log_sigmoid,
    )
)

# Least squares (Mao et al. 2017), targets 1 for real and 0 for fake.
register_loss(
    GanLoss(
        name="lsgan",
        d_loss=lambda real, fake: (
            0.5 * (jnp.mean(jnp.square(real - 1.0)) + jnp.mean(jnp.square(fake)))
        ),
        g_loss=lambda fake: 0.5 * jnp.mean(jnp.square(fake - 1.0)),
        reward=lambda fake: -jnp.square(fake - 1.0),
    )
)

# Wasserstein with gradient penalty (Gulrajani et al. 2017); the penalty is added by the step.
register_loss(
    GanLoss(
        name="wgan_gp",
        d_loss=lambda real, fake: jnp.mean(fake) - jnp.mean(real),
        g_loss=lambda fake: -jnp.mean(fake),
        reward=lambda fake: fake,
        gradient_penalty=True,
    )
)

# Hinge (Lim & Ye 2017; Miyato et al. 2018).
register_loss(
    GanLoss(
        name="hinge",
        d_loss=lambda real, fake: (
            jnp.mean(jax.nn.relu(1.0 - real)) + jnp.mean(jax.nn.relu(1.0 + fake))
        ),
        g_loss=lambda fake: -jnp.mean(fake),
        reward=lambda fake: fake,
    )
)
