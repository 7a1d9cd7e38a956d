"""Every config file loads, and its algorithm and space build."""

import importlib.util
import pathlib

import pytest

from gannas_jax import NB201Space, SequentialSpace
from gannas_jax.search.factory import ALGORITHMS, build_algorithm, build_space

CONFIGS = sorted((pathlib.Path(__file__).resolve().parents[1] / "configs").glob("*.py"))


def _load(path):
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config()


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_config_builds(path):
    config = _load(path)
    assert config.budget > 0
    assert "Run:" in path.read_text() and path.stem in path.read_text().split("Run:")[1]
    space = build_space(config)
    assert isinstance(space, NB201Space if config.evaluator == "tabular" else SequentialSpace)
    for name in ALGORITHMS:
        config.algorithm = name
        algo = build_algorithm(config, space)
        assert algo.name == name and algo.space == space


def test_digits_space_matches_the_data():
    config = _load(next(p for p in CONFIGS if p.stem == "digits"))
    space = build_space(config)
    assert space.input_shape == (8, 8, 1) and space.num_classes == 10


def test_nb201_config_copies_no_default():
    """The NB201 config is built from the algorithms' own defaults: building from it gives the
    same algorithms as the dataclasses with no arguments (random search's batch and GanNas's
    tuned NB201 settings excepted)."""
    from gannas_jax.search import (
        Bananas,
        GanNas,
        LocalSearch,
        RandomSearch,
        RegularizedEvolution,
        Reinforce,
    )

    config = _load(next(p for p in CONFIGS if p.stem == "nb201"))
    space = build_space(config)
    want = {
        "ganas": GanNas(
            space,
            num_init=10,
            batch_size=1,
            gan_steps=20,
            climb=True,
            rank_steps=50,
            rank_loss="pairwise",
            explore=0.3,
        ),
        "random": RandomSearch(space, batch_size=10),
        "evolution": RegularizedEvolution(space),
        "local_search": LocalSearch(space),
        "reinforce": Reinforce(space),
        "bananas": Bananas(space),
    }
    for name, algo in want.items():
        config.algorithm = name
        assert build_algorithm(config, space) == algo, name
