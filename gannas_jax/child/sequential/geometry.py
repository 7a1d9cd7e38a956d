"""Static sizes of a :class:`~gannas_jax.spaces.SequentialSpace`'s max-size child."""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp

from gannas_jax.spaces.sequential import CONV, SequentialSpace

# Channel blocks smaller than this make the blocked conv's pair loop too long; a space whose
# channel counts share no larger block runs each conv as a single masked block instead.
MIN_BLOCK = 4


class Geometry(NamedTuple):
    """Static sizes of the max-size child (all Python ints, hashable)."""

    cin: int  # the image's channels
    cm: int  # feature-map channels of the max-size child
    block: int  # channel block of the blocked conv; divides every channel count and cm
    kmax: int  # largest kernel size
    wm: int  # widest dense layer
    flat: int  # hr * wr * cm, the flattened features
    hr: int  # spatial size after the stages
    wr: int
    cin_values: tuple[int, ...]  # every input-channel count a slot can see, sorted
    cout_to_cin: tuple[int, ...]  # index into cin_values of each channel choice


@functools.cache
def geometry(space: SequentialSpace) -> Geometry:
    """The :class:`Geometry` of ``space``'s max-size child."""
    _, _, cin = space.input_shape
    hr, wr = space.reduced_shape
    cm = max(max(space.channels), cin)
    cin_values = tuple(sorted(set(space.channels) | {cin}))
    block = math.gcd(*space.channels, cm)
    return Geometry(
        cin=cin,
        cm=cm,
        block=block if block >= MIN_BLOCK else cm,
        kmax=max(space.kernel_sizes),
        wm=max(space.fc_widths),
        flat=hr * wr * cm,
        hr=hr,
        wr=wr,
        cin_values=cin_values,
        cout_to_cin=tuple(cin_values.index(c) for c in space.channels),
    )


def slot_cin(space: SequentialSpace, stage_codes: jax.Array) -> jax.Array:
    """``int32[S, L]``: the index into ``cin_values`` of every slot's input channel count."""
    g = geometry(space)
    table = jnp.asarray(g.cout_to_cin, jnp.int32)
    ci = jnp.asarray(g.cin_values.index(g.cin), jnp.int32)
    rows = []
    for s in range(space.num_stages):
        row = []
        for j in range(space.slots_per_stage):
            row.append(ci)
            ci = jnp.where(stage_codes[s, j, 0] == CONV, table[stage_codes[s, j, 2]], ci)
        rows.append(jnp.stack(row))
    return jnp.stack(rows)
