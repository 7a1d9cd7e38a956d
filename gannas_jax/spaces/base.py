"""The search-space protocol shared by every space.

An architecture is a fixed-length vector of integer choices ``int32[V]``. Variable ``v`` takes
values in ``[0, cardinalities[v])`` and every cardinality is at most ``max_cardinality`` (Cmax),
so a batch of architectures one-hot encodes to a dense ``float32[n, V, Cmax]`` tensor with a
static validity ``mask: bool[V, Cmax]``. Fixed shapes are what let one compiled program handle
every architecture of a space.

Spaces are frozen, hashable dataclasses: they hold static settings only, so they can be passed as
static arguments to ``jax.jit`` and closed over freely.
"""

from __future__ import annotations

import abc
import functools
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np


class Space(abc.ABC):
    """Abstract search space. Subclasses are frozen dataclasses."""

    # --- static description -------------------------------------------------------------------

    @property
    @abc.abstractmethod
    def name(self) -> str:
        """Short identifier of the space kind, e.g. ``"nb201"``."""

    @property
    @abc.abstractmethod
    def cardinalities(self) -> tuple[int, ...]:
        """Number of choices of each variable, length V."""

    @property
    @abc.abstractmethod
    def variable_names(self) -> tuple[str, ...]:
        """Human-readable name of each variable, length V."""

    @property
    @abc.abstractmethod
    def size(self) -> int:
        """Exact number of distinct canonical architectures (computed, never enumerated)."""

    @property
    def num_variables(self) -> int:
        """V, the length of an architecture vector."""
        return len(self.cardinalities)

    @property
    def max_cardinality(self) -> int:
        """Cmax, the width of the one-hot encoding."""
        return max(self.cardinalities)

    @property
    def mask(self) -> np.ndarray:
        """``bool[V, Cmax]``: True where choice ``c`` exists for variable ``v``."""
        card = np.asarray(self.cardinalities)[:, None]
        return np.arange(self.max_cardinality)[None, :] < card

    # --- array operations (pure jnp; jit- and vmap-safe) ----------------------------------------

    @abc.abstractmethod
    def canonicalize(self, archs: jax.Array) -> jax.Array:
        """Maps architectures to their canonical codes: equal networks get equal codes.

        Pure ``jnp``: works on ``int32[V]`` or ``int32[..., V]``, under ``jit`` and ``vmap``, and
        is idempotent.
        """

    def sample(self, key: jax.Array, n: int) -> jax.Array:
        """Draws ``n`` canonical architectures, each variable uniform over its choices.

        Args:
          key: a ``jax.random.key``.
          n: number of architectures.

        Returns:
          ``int32[n, V]`` canonical codes.
        """
        if not isinstance(n, (int, np.integer)) or n < 0:
            raise ValueError(f"sample: n must be a non-negative int, got {n!r}")
        return _sample(self, key, int(n))

    def onehot(self, archs: jax.Array) -> jax.Array:
        """One-hot encodes ``int32[..., V]`` to ``float32[..., V, Cmax]``.

        Entries where ``mask`` is False are always zero, because codes are below the variable's
        cardinality.
        """
        archs = self._check_shape(archs)
        if not isinstance(archs, jax.core.Tracer):
            self.validate(archs)
        return jax.nn.one_hot(archs, self.max_cardinality, dtype=jnp.float32)

    # --- validation -------------------------------------------------------------------------------

    def _check_shape(self, archs: Any) -> Any:
        shape = getattr(archs, "shape", None)
        if shape is None:
            archs = np.asarray(archs)
            shape = archs.shape
        if len(shape) == 0 or shape[-1] != self.num_variables:
            raise ValueError(
                f"{self.name}: architectures must have shape [..., {self.num_variables}], "
                f"got shape {tuple(shape)}"
            )
        return archs

    def validate(self, archs: Any) -> np.ndarray:
        """Checks concrete architectures and returns them as ``np.int32[..., V]``.

        Raises:
          ValueError: wrong shape, non-integer dtype, or a code out of range (the message names
            the variable and the offending value).
        """
        arr = np.asarray(self._check_shape(archs))
        if arr.dtype.kind not in "iu":
            if arr.dtype.kind == "f" and arr.size and np.all(np.mod(arr, 1) == 0):
                arr = arr.astype(np.int64)
            elif arr.size:
                raise ValueError(
                    f"{self.name}: architecture codes must be integers, got {arr.dtype}"
                )
            else:
                arr = arr.astype(np.int64)
        card = np.asarray(self.cardinalities)
        bad = (arr < 0) | (arr >= card)
        if bad.any():
            idx = np.argwhere(bad)[0]
            v = int(idx[-1])
            raise ValueError(
                f"{self.name}: code {int(arr[tuple(idx)])} out of range for variable {v} "
                f"({self.variable_names[v]!r}), which has {card[v]} choices"
            )
        return arr.astype(np.int32)

    # --- string and spec forms --------------------------------------------------------------------

    @abc.abstractmethod
    def to_string(self, arch: Any) -> str:
        """Human-readable string of one architecture (of its canonical form)."""

    @abc.abstractmethod
    def from_string(self, s: str) -> np.ndarray:
        """Inverse of :meth:`to_string`; returns canonical ``np.int32[V]``.

        Raises:
          ValueError: malformed string or unknown op.
        """

    @abc.abstractmethod
    def to_spec(self, arch: Any) -> dict:
        """JSON-able description of the layers of one architecture."""

    @abc.abstractmethod
    def from_spec(self, spec: dict) -> np.ndarray:
        """Inverse of :meth:`to_spec`; returns canonical ``np.int32[V]``."""

    def _one(self, arch: Any) -> np.ndarray:
        arr = self.validate(arch)
        if arr.ndim != 1:
            raise ValueError(
                f"{self.name}: expected one architecture of shape [{self.num_variables}], "
                f"got {arr.shape}"
            )
        return arr


def _check_choice(value: Any, allowed: Sequence[Any], what: str, space: str) -> None:
    if value not in allowed:
        raise ValueError(f"{space}: unknown {what} {value!r}; expected one of {list(allowed)}")


@functools.partial(jax.jit, static_argnums=(0, 2))
def _sample(space: Space, key: jax.Array, n: int) -> jax.Array:
    card = jnp.asarray(space.cardinalities, jnp.int32)[None, :]
    u = jax.random.uniform(key, (n, space.num_variables))
    return space.canonicalize(jnp.minimum((u * card).astype(jnp.int32), card - 1))
