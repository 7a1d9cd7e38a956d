"""The compact encoding the GAN trains on: only the valid (variable, choice) entries.

A space's dense one-hot ``[V, Cmax]`` has structural zeros wherever a variable has fewer than
``Cmax`` choices: 62 of the default ``SequentialSpace``'s 154 entries. A generator whose last layer
emits all ``V * Cmax`` logits and a discriminator whose first layer reads all of them carry dead
weights there (masked logits, inputs that are always zero). The GAN therefore works on the
``N = sum(cardinalities)`` valid entries only: the same functions, with no dead weights, and
every matmul and elementwise op of a training step ``N / (V * Cmax)`` the size.

The compact order groups variables by cardinality: one *block* per distinct cardinality ``c``,
holding that block's variables (in variable order) times their ``c`` choices. A block is a
contiguous slice that reshapes to ``[..., n_vars, c]``, so per-variable softmax, argmax and
one-hot are plain reductions over the last axis, with no gathers in the training step. When all
variables share one cardinality (NB201) the compact order is the dense order and
:meth:`Encoding.compress` / :meth:`Encoding.expand` are reshapes.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

from gannas_jax.decode import MASKED_LOGIT
from gannas_jax.spaces.base import Space


@dataclasses.dataclass(frozen=True)
class Block:
    """One cardinality's variables: compact entries ``[offset, offset + len(variables) * card)``."""

    card: int
    variables: tuple[int, ...]
    offset: int

    @property
    def size(self) -> int:
        return len(self.variables) * self.card


class Encoding:
    """Static maps between a space's codes, its dense one-hot and the compact encoding."""

    def __init__(self, space: Space):
        cards = np.asarray(space.cardinalities, np.int64)
        self.num_variables = int(cards.size)
        self.max_cardinality = int(space.max_cardinality)
        blocks, offset = [], 0
        for c in sorted(set(cards.tolist())):
            variables = tuple(int(v) for v in np.flatnonzero(cards == c))
            blocks.append(Block(int(c), variables, offset))
            offset += len(variables) * int(c)
        self.blocks: tuple[Block, ...] = tuple(blocks)
        self.size = offset  # N
        cmax = self.max_cardinality
        # dense_index[i]: the dense flat entry (v * Cmax + j) of compact entry i
        dense_index = [v * cmax + j for b in blocks for v in b.variables for j in range(b.card)]
        self.dense_index = np.asarray(dense_index, np.int32)
        self.identity = bool(np.array_equal(self.dense_index, np.arange(cards.size * cmax)))
        # compact_index[d]: the compact entry of dense entry d, or N (a pad column) if invalid
        compact_index = np.full(cards.size * cmax, self.size, np.int32)
        compact_index[self.dense_index] = np.arange(self.size, dtype=np.int32)
        self.compact_index = compact_index
        # variable order of the concatenated per-block codes, and its inverse
        self.block_variables = np.asarray([v for b in blocks for v in b.variables], np.int32)
        self.variable_position = np.argsort(self.block_variables).astype(np.int32)

    # --- conversions (used outside the training step's inner loop) -------------------------------

    def compress(self, dense: jax.Array) -> jax.Array:
        """``float[..., V, Cmax]`` -> ``float[..., N]`` (the valid entries)."""
        flat = dense.reshape(dense.shape[:-2] + (-1,))
        return flat if self.identity else jnp.take(flat, self.dense_index, axis=-1)

    def expand(self, compact: jax.Array, fill: float = MASKED_LOGIT) -> jax.Array:
        """``float[..., N]`` -> ``float[..., V, Cmax]`` with ``fill`` at invalid entries."""
        shape = compact.shape[:-1] + (self.num_variables, self.max_cardinality)
        if self.identity:
            return compact.reshape(shape)
        pad = jnp.full(compact.shape[:-1] + (1,), fill, compact.dtype)
        return jnp.take(
            jnp.concatenate([compact, pad], axis=-1), self.compact_index, axis=-1
        ).reshape(shape)

    def onehot(self, codes: jax.Array, dtype=jnp.float32) -> jax.Array:
        """``int[..., V]`` codes -> ``float[..., N]`` compact one-hot."""
        parts = []
        for b in self.blocks:
            sub = codes[..., np.asarray(b.variables)]
            parts.append(
                jax.nn.one_hot(sub, b.card, dtype=dtype).reshape(sub.shape[:-1] + (b.size,))
            )
        return parts[0] if len(parts) == 1 else jnp.concatenate(parts, axis=-1)

    # --- per-block ops on compact arrays ----------------------------------------------------------

    def split(self, x: jax.Array) -> list[jax.Array]:
        """``[..., N]`` -> one ``[..., n_vars, card]`` view per block."""
        return [
            x[..., b.offset : b.offset + b.size].reshape(x.shape[:-1] + (len(b.variables), b.card))
            for b in self.blocks
        ]

    def join(self, parts: list[jax.Array]) -> jax.Array:
        """Inverse of :meth:`split`."""
        flat = [p.reshape(p.shape[:-2] + (-1,)) for p in parts]
        return flat[0] if len(flat) == 1 else jnp.concatenate(flat, axis=-1)

    def codes(self, parts: list[jax.Array]) -> jax.Array:
        """Per-block ``int[..., n_vars]`` choices -> ``int[..., V]`` in variable order."""
        joined = parts[0] if len(parts) == 1 else jnp.concatenate(parts, axis=-1)
        if np.array_equal(self.variable_position, np.arange(self.num_variables)):
            return joined
        return jnp.take(joined, self.variable_position, axis=-1)

    def hard(self, perturbed: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Per-variable argmax of compact scores: ``(int32[..., V] codes, float[..., N] hots)``."""
        raws, hots = [], []
        for p in self.split(perturbed):
            raw = jnp.argmax(p, axis=-1).astype(jnp.int32)
            raws.append(raw)
            hots.append(jax.nn.one_hot(raw, p.shape[-1], dtype=perturbed.dtype))
        return self.codes(raws), self.join(hots)

    def softmax(self, x: jax.Array) -> jax.Array:
        """Per-variable softmax of compact logits."""
        return self.join([jax.nn.softmax(p, axis=-1) for p in self.split(x)])

    def log_softmax(self, x: jax.Array) -> jax.Array:
        """Per-variable log-softmax of compact logits."""
        return self.join([jax.nn.log_softmax(p, axis=-1) for p in self.split(x)])

    def mean_entropy(self, logits: jax.Array) -> jax.Array:
        """Mean over variables of each variable's categorical entropy: ``float[...]``."""
        per_block = []
        for p in self.split(logits):
            logp = jax.nn.log_softmax(p, axis=-1)
            per_block.append(jnp.sum(jnp.exp(logp) * logp, axis=-1))  # [..., n_vars]
        return -jnp.mean(
            per_block[0] if len(per_block) == 1 else jnp.concatenate(per_block, axis=-1), axis=-1
        )

    def mean_log_prob(self, logits: jax.Array, onehot: jax.Array) -> jax.Array:
        """Mean over variables of ``log p(choice)`` for compact one-hot choices: ``float[...]``."""
        return jnp.sum(self.log_softmax(logits) * onehot, axis=-1) / self.num_variables


@functools.cache
def encoding(space: Space) -> Encoding:
    """The (cached) :class:`Encoding` of a space."""
    return Encoding(space)
