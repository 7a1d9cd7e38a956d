"""Generator and discriminator (Flax Linen).

The defaults are the original sketch's MLPs: ``z (100) -> 256 -> one-hot size`` for the generator
and ``one-hot size -> 256 -> 1`` for the discriminator. Deeper or residual generators, and a
discriminator with spectral normalization or dropout, are options.
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from gannas_jax.gan.encoding import encoding
from gannas_jax.spaces.base import Space


@jax.custom_vjp
def matmul(x: jax.Array, w: jax.Array) -> jax.Array:
    """``x @ w`` for ``x: [n, in]``, ``w: [in, out]``, with a CPU-friendly backward pass.

    Autodiff would express both gradients as dots that contract a leading or trailing axis of
    both operands (``x^T g``, ``g w^T``); XLA:CPU runs those through a generic path several
    times slower than a plain ``[m, k] @ [k, n]`` product (measured in the training scan: the
    generator's first-layer weight gradient was its most expensive kernel). Here the transposes
    are taken first, behind an optimization barrier (a microbenchmark of that gradient inside
    ``lax.scan``: 33 us against 56 us for the autodiff form), at the cost of a small copy.
    """
    return x @ w


def _matmul_fwd(x, w):
    return x @ w, (x, w)


def _matmul_bwd(res, g):
    x, w = res
    if w.shape[1] == 1:
        # A one-unit layer (the discriminator's output): an outer product and a column sum
        # vectorize, where XLA:CPU emits the [in, n] @ [n, 1] product as a slow loop (measured:
        # 42 us per step for its 256 x 128 weight gradient).
        return g * w[:, 0][None, :], jnp.sum(x * g, axis=0)[:, None]
    xt, wt = jax.lax.optimization_barrier((x.T, w.T))
    return g @ wt, xt @ g


matmul.defvjp(_matmul_fwd, _matmul_bwd)


class Dense(nn.Module):
    """``flax.linen.Dense`` (same parameters and initializers) on :func:`matmul`, for 2-D inputs."""

    features: int

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        kernel = self.param("kernel", nn.initializers.lecun_normal(), (x.shape[-1], self.features))
        bias = self.param("bias", nn.initializers.zeros_init(), (self.features,))
        return matmul(x, kernel) + bias[None, :]


class Generator(nn.Module):
    """Maps noise ``z`` to masked logits over each variable's choices.

    The last layer has one unit per valid (variable, choice) pair (see
    :mod:`gannas_jax.gan.encoding`); choices a variable does not have get :data:`MASKED_LOGIT`.

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
    def __call__(self, z: jax.Array, compact: bool = False) -> jax.Array:
        """``z: float32[n, z_dim]`` -> logits ``float32[n, V, Cmax]`` (invalid choices masked),
        or with ``compact=True`` the compact logits ``float32[n, N]``."""
        h = z
        for i, width in enumerate(self.hidden):
            out = nn.relu(Dense(width, name=f"hidden{i}")(h))
            h = h + out if (self.residual and i > 0 and h.shape[-1] == width) else out
        enc = encoding(self.space)
        logits = Dense(enc.size, name="logits")(h)
        return logits if compact else enc.expand(logits)


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
        return matmul(x, kernel / sigma) + bias[None, :]


class Discriminator(nn.Module):
    """Scores one-hot (or relaxed one-hot) architectures; higher means "looks real".

    Attributes:
      space: the search space. Inputs are dense ``[n, V, Cmax]`` encodings (entries of missing
        choices are dropped: they carry no information) or compact ``[n, N]`` ones (see
        :mod:`gannas_jax.gan.encoding`).
      hidden: widths of the hidden layers.
      spectral_norm: spectrally normalize every layer.
      dropout: dropout rate after each hidden layer (needs a ``"dropout"`` rng when
        ``deterministic`` is False).
      negative_slope: slope of the leaky ReLU.
    """

    space: Space
    hidden: Sequence[int] = (256,)
    spectral_norm: bool = False
    dropout: float = 0.0
    negative_slope: float = 0.2

    @nn.compact
    def __call__(self, x: jax.Array, deterministic: bool = True) -> jax.Array:
        """``x: float32[n, V, Cmax]`` or compact ``float32[n, N]`` -> logits ``float32[n]``."""
        h = x if x.ndim == 2 else encoding(self.space).compress(x)

        def dense(width, name):
            return (
                SpectralDense(width, name=name) if self.spectral_norm else Dense(width, name=name)
            )

        for i, width in enumerate(self.hidden):
            h = nn.leaky_relu(dense(width, f"hidden{i}")(h), self.negative_slope)
            if self.dropout > 0:
                h = nn.Dropout(self.dropout)(h, deterministic=deterministic)
        return dense(1, "out")(h)[..., 0]
