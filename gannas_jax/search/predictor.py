"""An ensemble of small MLPs that predicts an architecture's score (BANANAS' predictor).

Inputs are the compact one-hot encoding of :mod:`gannas_jax.gan.encoding` (only the valid
``(variable, choice)`` entries); targets are the scores, standardized by their mean and standard
deviation. The members are stacked on a leading axis and trained together (``jax.vmap``) by
minibatch Adam, one ``lax.scan`` over a fixed number of steps; they differ in their
initialization and in their minibatches (drawn with replacement), which is what spreads their
predictions where the data say little.

The training set grows every search iteration. So that one compiled program serves every size,
it is padded to a fixed *capacity* (a search passes its budget) and the minibatches are drawn
from the filled rows only: the cost of a fit does not grow with the data, and a search compiles
the trainer once (the cache is shared by every search in the process with the same settings).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from gannas_jax.gan.encoding import encoding
from gannas_jax.spaces import Space

MIN_CAPACITY = 32


class MLP(nn.Module):
    """``num_layers`` ReLU layers of ``hidden_size`` units, then one linear output."""

    hidden_size: int
    num_layers: int

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        for _ in range(self.num_layers):
            x = nn.relu(nn.Dense(self.hidden_size)(x))
        return nn.Dense(1)(x)[..., 0]


@dataclasses.dataclass(frozen=True)
class PredictorConfig:
    """Static settings of the ensemble and its training.

    Attributes:
      ensemble_size: members (each a separately initialized MLP).
      hidden_size, num_layers: each member's hidden layers.
      steps: Adam steps.
      batch_size: rows per member and step, drawn with replacement.
      learning_rate: Adam's step size.
    """

    ensemble_size: int = 5
    hidden_size: int = 64
    num_layers: int = 2
    steps: int = 300
    batch_size: int = 64
    learning_rate: float = 0.01

    @property
    def model(self) -> MLP:
        return MLP(self.hidden_size, self.num_layers)


@dataclasses.dataclass(frozen=True)
class Predictor:
    """A trained ensemble: stacked member parameters and the target standardization."""

    space: Space
    config: PredictorConfig
    params: Any  # member parameters, stacked on a leading [ensemble_size] axis
    loc: float  # mean of the training scores
    scale: float  # their standard deviation (1 when they are all equal)


def capacity(n: int) -> int:
    """A padded size for ``n`` rows when none is given: a power of two, >= MIN_CAPACITY."""
    return max(MIN_CAPACITY, 1 << max(int(n) - 1, 0).bit_length())


@functools.partial(jax.jit, static_argnums=(0, 1))
def _fit(space: Space, config: PredictorConfig, key, codes, targets, count):
    x = encoding(space).onehot(codes)  # [capacity, N]; rows from `count` on are padding
    model, tx = config.model, optax.adam(config.learning_rate)
    k_init, k_steps = jax.random.split(key)
    params = jax.vmap(model.init, in_axes=(0, None))(
        jax.random.split(k_init, config.ensemble_size), x[:1]
    )

    def loss(p, idx):
        return jnp.mean((model.apply(p, x[idx]) - targets[idx]) ** 2)

    def step(carry, k):
        p, opt = carry
        # each member its own minibatch, drawn with replacement from the filled rows
        idx = jax.random.randint(k, (config.ensemble_size, config.batch_size), 0, count)
        grads = jax.vmap(jax.grad(loss))(p, idx)
        updates, opt = jax.vmap(tx.update)(grads, opt, p)
        return (optax.apply_updates(p, updates), opt), None

    keys = jax.random.split(k_steps, config.steps)
    (params, _), _ = jax.lax.scan(step, (params, jax.vmap(tx.init)(params)), keys)
    return params


@functools.partial(jax.jit, static_argnums=(0, 1))
def _predict(space: Space, config: PredictorConfig, params, codes):
    x = encoding(space).onehot(codes)
    return jax.vmap(config.model.apply, in_axes=(0, None))(params, x)  # [E, n]


def fit_predictor(
    space: Space,
    key: jax.Array,
    archs: np.ndarray,
    scores: np.ndarray,
    config: PredictorConfig = PredictorConfig(),
    pad_to: int | None = None,
) -> Predictor:
    """Trains the ensemble on ``archs`` (``int[n, V]``) and their ``scores`` (``float[n]``).

    ``pad_to`` (>= n) is the padded size of the training set: fits of any ``n`` up to it share
    one compiled program. None: the next power of two (at least :data:`MIN_CAPACITY`).
    """
    archs, scores = np.asarray(archs, np.int32), np.asarray(scores, np.float64)
    n = len(scores)
    if n == 0 or archs.shape != (n, space.num_variables):
        raise ValueError(
            f"fit_predictor: need int[n, {space.num_variables}] archs and float[n] scores with "
            f"n >= 1, got shapes {archs.shape} and {scores.shape}"
        )
    if not np.all(np.isfinite(scores)):
        raise ValueError("fit_predictor: scores must be finite")
    loc, scale = float(scores.mean()), float(scores.std())
    scale = scale if scale > 0 else 1.0
    cap = capacity(n) if pad_to is None else int(pad_to)
    if cap < n:
        raise ValueError(f"fit_predictor: pad_to={pad_to} is less than the {n} rows")
    codes = np.zeros((cap, space.num_variables), np.int32)
    codes[:n] = archs
    targets = np.zeros(cap, np.float32)
    targets[:n] = (scores - loc) / scale
    params = _fit(space, config, key, codes, targets, np.asarray(n, np.int32))
    return Predictor(space, config, params, loc, scale)


def predict(predictor: Predictor, archs: np.ndarray, pad_to: int | None = None) -> np.ndarray:
    """``float64[ensemble_size, n]``: every member's predicted score of ``archs`` (``int[n, V]``).

    ``pad_to`` (>= n) pads the batch to a fixed size, so that varying ``n`` reuses one program.
    """
    archs = np.asarray(archs, np.int32)
    n = len(archs)
    codes = np.zeros((max(n, pad_to or 0), predictor.space.num_variables), np.int32)
    codes[:n] = archs
    out = _predict(predictor.space, predictor.config, predictor.params, codes)
    return np.asarray(out, np.float64)[:, :n] * predictor.scale + predictor.loc
