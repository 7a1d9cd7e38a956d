"""Generator and discriminator (Flax Linen).

The defaults are the original sketch's MLPs: ``z (100) -> 256 -> one-hot size`` for the generator
and ``one-hot size -> 256 -> 1`` for the discriminator. Deeper or residual generators, and a
discriminator with spectral normalization or dropout, are options.
"""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from gannas_jax.decode import mask_logits
from gannas_jax.spaces.base import Space


class Generator(nn.Module):
    """Maps noise ``z`` to masked logits over each variable's choices.

    Attributes:
      space: the search space; fixes the output shape ``[V, Cmax]`` and the mask.
      hidden: widths of the hidden layers.
      residual: adds a skip connection around each hidden layer after the first whose width
        matches its input.
    """

    space: Space
    hidden: Sequence[int] = (256,)
    residual: bool = False

    @nn.compact
    def __call__(self, z: jax.Array) -> jax.Array:
        """``z: float32[n, z_dim]`` -> logits ``float32[n, V, Cmax]`` (invalid choices masked)."""
        h = z
        for i, width in enumerate(self.hidden):
            out = nn.relu(nn.Dense(width, name=f"hidden{i}")(h))
            h = h + out if (self.residual and i > 0 and h.shape[-1] == width) else out
        v, c = self.space.num_variables, self.space.max_cardinality
        logits = nn.Dense(v * c, name="logits")(h).reshape(h.shape[:-1] + (v, c))
        return mask_logits(self.space, logits)


class SpectralDense(nn.Module):
    """A dense layer whose kernel is divided by its largest singular value.

    The singular value is estimated by power iteration from a fixed start vector on every call,
    so the layer keeps no mutable state (no ``batch_stats`` to thread through the GAN state).
    As in Miyato et al. (2018) the singular vectors are treated as constants for the gradient.

    Attributes:
      features: output width.
      power_iterations: power-iteration steps per call.
    """

    features: int
    power_iterations: int = 5

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        kernel = self.param("kernel", nn.initializers.lecun_normal(), (x.shape[-1], self.features))
        bias = self.param("bias", nn.initializers.zeros_init(), (self.features,))
        w = jax.lax.stop_gradient(kernel)
        u = jnp.full((self.features,), self.features**-0.5, kernel.dtype)
        v = w @ u
        for _ in range(self.power_iterations):
            v = w @ u
            v = v / (jnp.linalg.norm(v) + 1e-12)
            u = v @ w
            u = u / (jnp.linalg.norm(u) + 1e-12)
        sigma = v @ kernel @ u
        return x @ (kernel / sigma) + bias.reshape((1,) * (x.ndim - 1) + bias.shape)


class Discriminator(nn.Module):
    """Scores one-hot (or relaxed one-hot) architectures; higher means "looks real".

    Attributes:
      hidden: widths of the hidden layers.
      spectral_norm: spectrally normalize every layer.
      dropout: dropout rate after each hidden layer (needs a ``"dropout"`` rng when
        ``deterministic`` is False).
      negative_slope: slope of the leaky ReLU.
    """

    hidden: Sequence[int] = (256,)
    spectral_norm: bool = False
    dropout: float = 0.0
    negative_slope: float = 0.2

    @nn.compact
    def __call__(self, x: jax.Array, deterministic: bool = True) -> jax.Array:
        """``x: float32[n, V, Cmax]`` -> logits ``float32[n]``."""
        h = x.reshape(x.shape[:-2] + (-1,))

        def dense(width, name):
            return SpectralDense(width, name=name) if self.spectral_norm else nn.Dense(width, name=name)

        for i, width in enumerate(self.hidden):
            h = nn.leaky_relu(dense(width, f"hidden{i}")(h), self.negative_slope)
            if self.dropout > 0:
                h = nn.Dropout(self.dropout)(h, deterministic=deterministic)
        return dense(1, "out")(h)[..., 0]
