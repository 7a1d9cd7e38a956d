"""REINFORCE (Williams, 1992) as used on NAS-Bench-201 by Dong & Yang (ICLR 2020).

The policy is one independent softmax per variable: logits ``float32[V, Cmax]``, with the
choices a variable does not have at ``-inf``. Each iteration samples ``batch_size``
architectures from it; once they are scored, the logits take one optimizer step on

    loss = -mean_i (r_i - baseline) * log pi(arch_i),

where the baseline is an exponential moving average of past rewards. The update uses the
architectures that were actually told (canonical codes) and their scores.

A unique architecture counts once, so a sampled architecture that was already evaluated is
drawn again (up to ``max_tries`` draws per query). When the policy is so concentrated that no
unseen one comes, the query is a one-variable mutation of the policy's mode, and failing that a
random architecture.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax

from gannas_jax.search.base import Algorithm, History, SearchError, host_rng, mutate_host
from gannas_jax.spaces import Space

OPTIMIZERS = ("adam", "sgd")


@flax.struct.dataclass
class ReinforceState(History):
    """The history plus the policy, its optimizer and the reward baseline."""

    logits: jax.Array  # float32[V, Cmax]: per-variable logits, -inf where a choice does not exist
    opt_state: Any  # optax state of the logits
    baseline: np.ndarray  # float64[]: EMA of the batch-mean reward (meaningless before a tell)
    updates: np.ndarray  # int64[]: policy updates done


@functools.cache
def _optimizer(name: str, learning_rate: float) -> optax.GradientTransformation:
    """One transformation object per setting, so the jitted update compiles once per setting."""
    return {"adam": optax.adam, "sgd": optax.sgd}[name](learning_rate)


@functools.partial(jax.jit, static_argnums=(0, 1))
def _update(optimizer: str, learning_rate: float, logits, opt_state, archs, advantages):
    """One optimizer step of the policy-gradient loss; returns ``(logits, opt_state)``."""

    def loss(lg):
        logp = jax.nn.log_softmax(lg, axis=-1)  # [V, Cmax]; -inf at missing choices
        chosen = jnp.take_along_axis(logp[None], archs[..., None], axis=-1)[..., 0]  # [b, V]
        return -jnp.mean(advantages * jnp.sum(chosen, axis=-1))

    tx = _optimizer(optimizer, learning_rate)
    grads = jax.grad(loss)(logits)
    updates, opt_state = tx.update(grads, opt_state, logits)
    return optax.apply_updates(logits, updates), opt_state


def policy_probs(state: ReinforceState) -> np.ndarray:
    """``float64[V, Cmax]``: each variable's choice probabilities (0 where a choice is missing)."""
    logits = np.asarray(state.logits, np.float64)
    p = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return p / p.sum(axis=-1, keepdims=True)


def policy_mode(space: Space, state: ReinforceState) -> np.ndarray:
    """``int32[V]``: the canonical form of each variable's most likely choice."""
    mode = np.argmax(np.asarray(state.logits), axis=-1).astype(np.int32)
    return np.asarray(space.canonicalize(mode[None]), np.int32)[0]


@dataclasses.dataclass(frozen=True)
class Reinforce(Algorithm):
    """Policy-gradient search with a per-variable softmax policy and an EMA reward baseline.

    Attributes:
      batch_size: architectures sampled (and updated on) per iteration.
      learning_rate: the optimizer's step size on the logits.
      ema_decay: decay of the reward baseline's moving average.
      optimizer: "adam" (the default: it normalizes the gradient, so the step does not depend on
        the reward's scale, e.g. accuracy in percent) or "sgd".
      max_tries: policy draws per query before falling back to a mutation of the mode.
    """

    learning_rate: float = 0.2
    ema_decay: float = 0.9
    optimizer: str = "adam"
    max_tries: int = 300

    name = "reinforce"

    def __post_init__(self):
        super().__post_init__()
        if not (isinstance(self.learning_rate, (int, float)) and self.learning_rate > 0):
            raise SearchError(f"reinforce: learning_rate must be > 0, got {self.learning_rate!r}")
        if not (isinstance(self.ema_decay, (int, float)) and 0 <= self.ema_decay < 1):
            raise SearchError(f"reinforce: ema_decay must be in [0, 1), got {self.ema_decay!r}")
        if self.optimizer not in OPTIMIZERS:
            raise SearchError(
                f"reinforce: unknown optimizer {self.optimizer!r}; expected one of "
                f"{list(OPTIMIZERS)}"
            )
        if not isinstance(self.max_tries, int) or self.max_tries < 1:
            raise SearchError(
                f"reinforce: max_tries must be a positive int, got {self.max_tries!r}"
            )

    def init(self, key: jax.Array, budget: int) -> ReinforceState:
        del key  # the policy starts uniform
        logits = jnp.where(jnp.asarray(self.space.mask), 0.0, -jnp.inf).astype(jnp.float32)
        return ReinforceState.empty(
            self.space,
            budget,
            logits=logits,
            opt_state=_optimizer(self.optimizer, float(self.learning_rate)).init(logits),
            baseline=np.asarray(0.0),
            updates=np.asarray(0, np.int64),
        )

    def sample(self, rng: np.random.Generator, state: ReinforceState, n: int) -> np.ndarray:
        """``n`` canonical architectures drawn from the policy (on the host)."""
        cdf = np.cumsum(policy_probs(state), axis=-1)  # [V, Cmax]
        u = rng.random((n, self.space.num_variables, 1))
        codes = (u >= cdf[None, :, :-1]).sum(-1)  # inverse CDF per variable
        codes = np.minimum(codes, np.asarray(self.space.cardinalities) - 1).astype(np.int32)
        return np.asarray(self.space.canonicalize(codes), np.int32)

    def ask(self, key: jax.Array, state: ReinforceState) -> tuple[np.ndarray, ReinforceState]:
        rng = host_rng(key)
        seen = self.seen(state)
        n = self.batch(state)
        out = []
        for _ in range(n):
            got = self.take_novel(self.sample(rng, state, self.max_tries), seen, 1)
            if not len(got):  # the policy has concentrated on what is already evaluated
                mode = np.repeat(policy_mode(self.space, state)[None], self.max_tries, axis=0)
                got = self.take_novel(mutate_host(self.space, rng, mode), seen, 1)
            if not len(got):
                got = self.random_novel(rng, seen, 1)
            out.append(got[0])
        return np.asarray(out, np.int32), state

    def tell(self, state: ReinforceState, archs: np.ndarray, scores: np.ndarray) -> ReinforceState:
        rewards = np.asarray(scores, np.float64)
        if not np.all(np.isfinite(rewards)):
            raise SearchError(
                f"reinforce: scores must be finite to update the policy, got {rewards}"
            )
        state = super().tell(state, archs, scores)
        mean = float(rewards.mean())
        # The first batch has no history: the baseline starts at its mean reward.
        old = mean if int(state.updates) == 0 else float(state.baseline)
        logits, opt_state = _update(
            self.optimizer,
            float(self.learning_rate),
            state.logits,
            state.opt_state,
            jnp.asarray(archs, jnp.int32),
            jnp.asarray(rewards - old, jnp.float32),
        )
        return state.replace(
            logits=logits,
            opt_state=opt_state,
            baseline=np.asarray(self.ema_decay * old + (1 - self.ema_decay) * mean),
            updates=np.asarray(int(state.updates) + 1, np.int64),
        )
