"""NAS-Bench-201, tabular: every query is a lookup in the benchmark tables.

Run:
  python scripts/search.py --config configs/nb201.py --workdir runs/nb201 \
      --config.dataset=cifar10 --config.algorithm=ganas --config.budget=150 --config.seed=0

The tables are read from --config.benchmark_dir, or from $GANNAS_NB201_DIR when that is empty.
`dataset` is one of cifar10 (the cifar10-valid setting), cifar100, ImageNet16-120.
"""

import ml_collections

from gannas_jax.search.bananas import Bananas
from gannas_jax.search.base import RandomSearch, RegularizedEvolution
from gannas_jax.search.factory import dataclass_defaults
from gannas_jax.search.ganas import GanNas
from gannas_jax.search.local import LocalSearch
from gannas_jax.search.reinforce import Reinforce


def get_config():
    c = ml_collections.ConfigDict()
    c.evaluator = "tabular"
    c.dataset = "cifar10"
    c.benchmark_dir = ""
    c.algorithm = "ganas"  # ganas | random | evolution | local_search | reinforce | bananas
    c.budget = 150
    c.seed = 0
    # Every setting comes from the algorithm's own defaults; override any with --config.x=y,
    # e.g. --config.ganas.gan.loss=hinge.
    c.ganas = dataclass_defaults(GanNas)
    # Tuned on seeds 1000-1059 (docs/search.md): 10 random starts, then one query per
    # iteration; 20 GAN steps and 50 pairwise ranking steps (random evaluated pairs, the better
    # one should score higher) per iteration, continuing the same GAN; a hill climb over the
    # discriminator's favourite one-variable edits (a uniform unseen edit 30% of the time),
    # restarting at a local optimum from the discriminator's favourite of 100 random ones.
    c.ganas.update(
        num_init=10,
        batch_size=1,
        gan_steps=20,
        climb=True,
        rank_steps=50,
        rank_loss="pairwise",
        explore=0.3,
    )
    c.random = dataclass_defaults(RandomSearch)
    c.random.batch_size = 10
    # Regularized evolution's defaults are Real et al. (2019)'s settings as used on NAS-Bench-201
    # by Dong & Yang (2020): one query per iteration, population 20, tournament 5.
    c.evolution = dataclass_defaults(RegularizedEvolution)
    # White et al. (2020): 10 random starts, then one query per iteration.
    c.local_search = dataclass_defaults(LocalSearch)
    # REINFORCE as run by Dong & Yang (2020): one sample per update, an EMA reward baseline
    # (decay 0.9); the Adam learning rate is tuned here (tuning seeds 1000-1029).
    c.reinforce = dataclass_defaults(Reinforce)
    # White et al. (2021): 10 random starts, 5 predictors, 10 of 100 mutation candidates per
    # iteration, chosen by independent Thompson sampling.
    c.bananas = dataclass_defaults(Bananas)
    return c
