"""gannas-jax: GAN-based neural architecture search in JAX/Flax.

The public API is re-exported flat from here. Heavy optional dependencies (tensorflow-datasets,
matplotlib, torch, orbax) are imported lazily where they are used, never at import time.
"""

from gannas_jax.child import (
    Child,
    NB201Child,
    SequentialChild,
    make_child,
    static_nb201,
    static_sequential,
)
from gannas_jax.data import Dataset, DatasetUnavailableError, batch_indices, batches, load_dataset
from gannas_jax.decode import DECODE_MODES, decode, decode_one
from gannas_jax.evaluate import EvalResult, Evaluator, TabularEvaluator, TrainingEvaluator
from gannas_jax.gan import (
    LOSSES,
    Discriminator,
    GanConfig,
    GanState,
    Generator,
    discriminate,
    fit_gan,
    gan_step,
    generate,
    init_gan,
)
from gannas_jax.parallel import fit_data_parallel, population_parallel
from gannas_jax.runtime import use_compilation_cache, use_cpu_cores
from gannas_jax.search import (
    GanNas,
    RandomSearch,
    RegularizedEvolution,
    SearchError,
    SearchResult,
    run_search,
)
from gannas_jax.spaces import NB201Space, SequentialSpace, Space, isomorphism_key
from gannas_jax.train import ChildState, TrainConfig, train_step

__version__ = "0.1.0"

__all__ = [
    "DECODE_MODES",
    "LOSSES",
    "Child",
    "ChildState",
    "Dataset",
    "DatasetUnavailableError",
    "Discriminator",
    "EvalResult",
    "Evaluator",
    "GanConfig",
    "GanNas",
    "GanState",
    "Generator",
    "NB201Child",
    "NB201Space",
    "RandomSearch",
    "RegularizedEvolution",
    "SearchError",
    "SearchResult",
    "SequentialChild",
    "SequentialSpace",
    "Space",
    "TabularEvaluator",
    "TrainConfig",
    "TrainingEvaluator",
    "__version__",
    "batch_indices",
    "batches",
    "decode",
    "decode_one",
    "discriminate",
    "fit_data_parallel",
    "fit_gan",
    "gan_step",
    "generate",
    "init_gan",
    "isomorphism_key",
    "load_dataset",
    "make_child",
    "population_parallel",
    "run_search",
    "static_nb201",
    "static_sequential",
    "train_step",
    "use_compilation_cache",
    "use_cpu_cores",
]
