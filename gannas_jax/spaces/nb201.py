"""The NAS-Bench-201 cell space (Dong & Yang, "NAS-Bench-201", ICLR 2020).

A cell is a DAG on 4 nodes with 6 edges ``j -> i`` (``j < i``), each carrying one of 5 ops, so the
space has 5**6 = 15,625 cells. Variable ``e`` of an architecture is the op index of edge ``e`` in
the order of the official string form ``|op~0|+|op~0|op~1|+|op~0|op~1|op~2|``.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import random
import re
from typing import Any

import jax
import numpy as np

from gannas_jax.spaces.base import Space

OPS: tuple[str, ...] = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")
# (target node, source node) of each edge, in the official string order.
EDGES: tuple[tuple[int, int], ...] = ((1, 0), (2, 0), (2, 1), (3, 0), (3, 1), (3, 2))
NUM_CELLS = len(OPS) ** len(EDGES)

_NODE_RE = re.compile(r"^\|(?:[^|]+\|)+$")
_EDGE_RE = re.compile(r"^([A-Za-z0-9_]+)~(\d+)$")


@functools.lru_cache(maxsize=1)
def _official_order() -> tuple[np.ndarray, np.ndarray]:
    """Returns (index -> codes ``int32[15625, 6]``, mixed-radix rank -> index ``int32[15625]``).

    The official benchmark enumerates cells with the first edge most significant and ops in the
    order of ``OPS``, then shuffles the list with Python's ``random`` seeded with 88 (NAS-Bench-201
    release, ``generate_meta_info`` in the authors' AutoDL-Projects). The tables under
    ``$GANNAS_NB201_DIR`` are checked against this order in the test suite.
    """
    cells = list(itertools.product(range(len(OPS)), repeat=len(EDGES)))
    rng = random.Random(88)
    rng.shuffle(cells)
    codes = np.asarray(cells, dtype=np.int32)
    radix = len(OPS) ** np.arange(len(EDGES) - 1, -1, -1)
    rank = codes @ radix
    inverse = np.empty(NUM_CELLS, dtype=np.int32)
    inverse[rank] = np.arange(NUM_CELLS, dtype=np.int32)
    codes.setflags(write=False)
    inverse.setflags(write=False)
    return codes, inverse


@dataclasses.dataclass(frozen=True)
class NB201Space(Space):
    """NAS-Bench-201 cell space: 6 edges x 5 ops, official string form and index order."""

    @property
    def name(self) -> str:
        return "nb201"

    @property
    def cardinalities(self) -> tuple[int, ...]:
        return (len(OPS),) * len(EDGES)

    @property
    def variable_names(self) -> tuple[str, ...]:
        return tuple(f"edge{src}->{dst}" for dst, src in EDGES)

    @property
    def size(self) -> int:
        return NUM_CELLS

    @property
    def ops(self) -> tuple[str, ...]:
        return OPS

    @property
    def edges(self) -> tuple[tuple[int, int], ...]:
        """(target, source) node of each variable."""
        return EDGES

    def canonicalize(self, archs: jax.Array) -> jax.Array:
        # Every one of the 15,625 cells is its own benchmark entry, so no two codes are merged
        # here; see `isomorphism_key` for the coarser equivalence.
        return self._check_shape(archs)

    # --- official index ---------------------------------------------------------------------------

    def from_index(self, index: Any) -> np.ndarray:
        """Codes of the cell with official benchmark index ``index`` (int or int array)."""
        idx = np.asarray(index)
        if idx.dtype.kind not in "iu":
            raise ValueError(f"nb201: index must be an integer, got {index!r}")
        if np.any((idx < 0) | (idx >= NUM_CELLS)):
            raise ValueError(f"nb201: index out of range [0, {NUM_CELLS}): {index!r}")
        return _official_order()[0][idx].copy()

    def to_index(self, arch: Any) -> Any:
        """Official benchmark index of ``int32[..., 6]`` codes (int for one cell)."""
        arr = self.validate(arch)
        radix = len(OPS) ** np.arange(len(EDGES) - 1, -1, -1)
        out = _official_order()[1][arr @ radix]
        return int(out) if out.ndim == 0 else out

    # --- strings and specs ------------------------------------------------------------------------

    def to_string(self, arch: Any) -> str:
        codes = self._one(arch)
        nodes: list[list[str]] = [[] for _ in range(3)]
        for (dst, src), c in zip(EDGES, codes, strict=True):
            nodes[dst - 1].append(f"{OPS[c]}~{src}")
        return "+".join("|" + "|".join(n) + "|" for n in nodes)

    def from_string(self, s: str) -> np.ndarray:
        if not isinstance(s, str):
            raise ValueError(f"nb201: expected a cell string, got {type(s).__name__}")
        parts = s.strip().split("+")
        if len(parts) != 3 or not all(_NODE_RE.match(p) for p in parts):
            raise ValueError(
                f"nb201: malformed cell string {s!r}; expected "
                "'|op~0|+|op~0|op~1|+|op~0|op~1|op~2|'"
            )
        codes = []
        for node, part in enumerate(parts, start=1):
            entries = part.strip("|").split("|")
            if len(entries) != node:
                raise ValueError(
                    f"nb201: node {node} of {s!r} must have {node} inputs, got {len(entries)}"
                )
            for src, entry in enumerate(entries):
                m = _EDGE_RE.match(entry)
                if not m:
                    raise ValueError(
                        f"nb201: malformed edge {entry!r} in {s!r}; expected 'op~source'"
                    )
                op, got_src = m.group(1), int(m.group(2))
                if op not in OPS:
                    raise ValueError(
                        f"nb201: unknown op {op!r} in {s!r}; expected one of {list(OPS)}"
                    )
                if got_src != src:
                    raise ValueError(
                        f"nb201: edge {entry!r} of node {node} must come from node {src}"
                    )
                codes.append(OPS.index(op))
        return np.asarray(codes, dtype=np.int32)

    def to_spec(self, arch: Any) -> dict:
        codes = self._one(arch)
        return {
            "space": self.name,
            "cell": self.to_string(codes),
            "edges": [
                {"from": src, "to": dst, "op": OPS[c]}
                for (dst, src), c in zip(EDGES, codes, strict=True)
            ],
        }

    def from_spec(self, spec: dict) -> np.ndarray:
        if not isinstance(spec, dict) or spec.get("space") != self.name:
            raise ValueError(f"nb201: not an nb201 spec: {spec!r}")
        edges = spec.get("edges")
        if not isinstance(edges, list) or len(edges) != len(EDGES):
            raise ValueError(f"nb201: spec needs {len(EDGES)} edges, got {edges!r}")
        codes = np.zeros(len(EDGES), np.int32)
        seen = set()
        for e in edges:
            try:
                key, op = (int(e["to"]), int(e["from"])), e["op"]
            except (KeyError, TypeError, ValueError) as err:
                raise ValueError(f"nb201: malformed edge {e!r} in spec") from err
            if key not in EDGES or key in seen:
                raise ValueError(f"nb201: invalid or repeated edge {e!r} in spec")
            if op not in OPS:
                raise ValueError(f"nb201: unknown op {op!r} in spec; expected one of {list(OPS)}")
            seen.add(key)
            codes[EDGES.index(key)] = OPS.index(op)
        return codes


def isomorphism_key(arch: Any) -> str:
    """A key shared by NB201 cells that NAS-Bench-201 counts as the same topology.

    Follows the benchmark's own convention (Dong & Yang 2020, Sec. 2.1: 6,466 unique topologies
    among 15,625 cells): ``skip_connect`` passes its input's expression through, every other op
    wraps it, a node is the sorted sum of its incoming terms, and a ``none`` edge, or an edge fed
    by a node whose only input was zeroed, contributes a zero term ``#``. Zero terms are kept in
    the sum, and the terms are strings ``(input)@op`` joined by ``+`` after sorting: both are
    part of the convention, and together they reproduce the published count exactly.
    """
    codes = NB201Space()._one(arch)
    nodes: dict[int, str] = {0: "0"}
    for dst in (1, 2, 3):
        terms = []
        for (d, src), c in zip(EDGES, codes, strict=True):
            if d != dst:
                continue
            op, inp = OPS[c], nodes[src]
            if op == "none" or inp == "#":
                terms.append("#")
            elif op == "skip_connect":
                terms.append(inp)
            else:
                terms.append(f"({inp})@{op}")
        nodes[dst] = "+".join(sorted(terms))
    return nodes[3]
