"""NAS-Bench-201, tabular: every query is a lookup in the benchmark tables.

Run:
  python scripts/search.py --config configs/nb201.py --workdir runs/nb201 \
      --config.dataset=cifar10 --config.algorithm=ganas --config.budget=150 --config.seed=0

The tables are read from --config.benchmark_dir, or from $GANNAS_NB201_DIR when that is empty.
`dataset` is one of cifar10 (the cifar10-valid setting), cifar100, ImageNet16-120.
"""

import ml_collections

from gannas_jax.gan import GanConfig
from gannas_jax.search.factory import dataclass_defaults


def get_config():
    c = ml_collections.ConfigDict()
    c.evaluator = "tabular"
    c.dataset = "cifar10"
    c.benchmark_dir = ""
    c.algorithm = "ganas"  # ganas | random | evolution
    c.budget = 150
    c.seed = 0

    c.ganas = ml_collections.ConfigDict()
    c.ganas.batch_size = 10
    c.ganas.num_init = 30
    c.ganas.top_k = 8
    c.ganas.gan_steps = 300
    c.ganas.num_candidates = 1000
    c.ganas.num_mutants = 0
    c.ganas.reinit = False
    c.ganas.gan = dataclass_defaults(GanConfig)  # e.g. --config.ganas.gan.loss=hinge
    c.ganas.gan.d_spectral_norm = False  # see the README's design notes (GanNas)

    c.random = ml_collections.ConfigDict({"batch_size": 10})
    # Real et al. (2019) settings as used on NAS-Bench-201 by Dong & Yang (2020).
    c.evolution = ml_collections.ConfigDict(
        {"batch_size": 1, "population_size": 20, "tournament_size": 5}
    )
    return c
