"""Builds algorithms and evaluators from an ``ml_collections`` config (see ``configs/``)."""

from __future__ import annotations

import dataclasses
from typing import Any

from gannas_jax.evaluate.base import Evaluator
from gannas_jax.search.base import Algorithm, RandomSearch, RegularizedEvolution, SearchError
from gannas_jax.spaces import NB201Space, SequentialSpace, Space

ALGORITHMS = ("ganas", "random", "evolution", "local_search", "reinforce", "bananas")
EVALUATORS = ("tabular", "training")


def dataclass_defaults(cls, skip: tuple[str, ...] = ("space",)):
    """An ``ml_collections.ConfigDict`` of every field of dataclass ``cls`` that has a default,
    with that default (a dataclass default becomes a nested ConfigDict), so that config files
    expose each setting to ``--config.x=y`` overrides and copy no default by hand."""
    import ml_collections

    values = {}
    for f in dataclasses.fields(cls):
        if f.name in skip or not f.init:
            continue
        if f.default is not dataclasses.MISSING:
            value = f.default
        elif f.default_factory is not dataclasses.MISSING:
            value = f.default_factory()
        else:
            continue
        if dataclasses.is_dataclass(value):
            value = ml_collections.ConfigDict(
                {g.name: getattr(value, g.name) for g in dataclasses.fields(value)}
            )
        values[f.name] = value
    return ml_collections.ConfigDict(values)


def _as_dict(c: Any) -> dict:
    return c.to_dict() if hasattr(c, "to_dict") else dict(c)


def _fields(cls, values: dict, where: str) -> dict:
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise SearchError(f"unknown {where} setting(s) {unknown}; known: {sorted(names)}")
    return values


def build_space(config) -> Space:
    if config.evaluator == "tabular":
        return NB201Space()
    kwargs = _as_dict(config.get("space", {}))
    for k in ("input_shape", "kernel_sizes", "channels", "fc_widths"):
        if k in kwargs:
            kwargs[k] = tuple(kwargs[k])
    return SequentialSpace(**_fields(SequentialSpace, kwargs, "space"))


def build_evaluator(config, space: Space | None = None) -> Evaluator:
    """The evaluator named by ``config.evaluator``."""
    if config.evaluator not in EVALUATORS:
        raise SearchError(
            f"unknown evaluator {config.evaluator!r}; expected one of {list(EVALUATORS)}"
        )
    space = space or build_space(config)
    if config.evaluator == "tabular":
        from gannas_jax.evaluate.tabular import TabularEvaluator

        return TabularEvaluator(config.dataset, config.get("benchmark_dir") or None)
    from gannas_jax.evaluate.training import TrainingEvaluator
    from gannas_jax.train import TrainConfig

    train = _fields(TrainConfig, _as_dict(config.get("train", {})), "train")
    return TrainingEvaluator(space, config.dataset, TrainConfig(**train))


def build_algorithm(config, space: Space) -> Algorithm:
    """The algorithm named by ``config.algorithm`` with its sub-config."""
    name = config.algorithm
    if name not in ALGORITHMS:
        raise SearchError(f"unknown algorithm {name!r}; expected one of {list(ALGORITHMS)}")
    settings = _as_dict(config.get(name, {}))
    if name == "random":
        return RandomSearch(space, **_fields(RandomSearch, settings, name))
    if name == "evolution":
        return RegularizedEvolution(space, **_fields(RegularizedEvolution, settings, name))
    if name == "local_search":
        from gannas_jax.search.local import LocalSearch

        return LocalSearch(space, **_fields(LocalSearch, settings, name))
    if name == "reinforce":
        from gannas_jax.search.reinforce import Reinforce

        return Reinforce(space, **_fields(Reinforce, settings, name))
    if name == "bananas":
        from gannas_jax.search.bananas import Bananas

        return Bananas(space, **_fields(Bananas, settings, name))
    from gannas_jax.gan import GanConfig
    from gannas_jax.search.ganas import GanNas

    gan = settings.pop("gan", {})
    gan = GanConfig(
        **_fields(
            GanConfig,
            {k: tuple(v) if isinstance(v, list) else v for k, v in gan.items()},
            "ganas.gan",
        )
    )
    return GanNas(space, gan=gan, **_fields(GanNas, settings, name))


def build(config) -> tuple[Algorithm, Evaluator]:
    """``(algorithm, evaluator)`` for a search config."""
    space = build_space(config)
    algorithm = build_algorithm(config, space)
    return algorithm, build_evaluator(config, space)


def training_config(
    dataset: str, budget: int, space: dict, train: dict | None = None, population: int = 16
):
    """The config of a training-based search: one place for what digits, mnist and cifar10 share.

    Args:
      dataset: a name known to :func:`gannas_jax.data.load_dataset`.
      budget: unique architectures to train.
      space: :class:`SequentialSpace` arguments.
      train: :class:`TrainConfig` overrides.
      population: children trained together, and so the queries per iteration of every
        algorithm.
    """
    import ml_collections

    from gannas_jax.search.ganas import GanNas
    from gannas_jax.train import TrainConfig

    c = ml_collections.ConfigDict()
    c.evaluator = "training"
    c.dataset = dataset
    c.algorithm = "ganas"  # ganas | random | evolution | local_search | reinforce | bananas
    c.budget = budget
    c.seed = 0
    c.space = ml_collections.ConfigDict(space)
    c.train = dataclass_defaults(TrainConfig)
    c.train.update(dict(train or {}, population=population))
    # Every algorithm asks for a whole population per iteration.
    c.ganas = dataclass_defaults(GanNas)
    c.ganas.update(
        batch_size=population,
        num_init=2 * population,
        top_k=max(4, population // 2),
        num_candidates=2000,
    )
    c.random = dataclass_defaults(RandomSearch)
    c.random.batch_size = population
    c.evolution = dataclass_defaults(RegularizedEvolution)
    c.evolution.update(
        batch_size=population, population_size=2 * population, tournament_size=population // 2
    )
    from gannas_jax.search.local import LocalSearch

    c.local_search = dataclass_defaults(LocalSearch)
    c.local_search.update(batch_size=population, num_init=population)
    from gannas_jax.search.bananas import Bananas
    from gannas_jax.search.reinforce import Reinforce

    c.reinforce = dataclass_defaults(Reinforce)
    c.reinforce.batch_size = population
    c.bananas = dataclass_defaults(Bananas)
    c.bananas.update(
        batch_size=population,
        num_init=population,
        num_candidates=max(c.bananas.num_candidates, 2 * population),
    )
    return c
