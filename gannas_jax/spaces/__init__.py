"""Search spaces: architectures as fixed-length integer vectors."""

from gannas_jax.spaces.base import Space
from gannas_jax.spaces.nb201 import NB201Space, isomorphism_key
from gannas_jax.spaces.sequential import SequentialSpace

__all__ = ["Space", "NB201Space", "SequentialSpace", "isomorphism_key"]
