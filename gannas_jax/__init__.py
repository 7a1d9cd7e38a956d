"""gannas-jax: GAN-based neural architecture search in JAX/Flax.

The public API is re-exported flat from here. Heavy optional dependencies (tensorflow-datasets,
matplotlib, torch) are imported lazily where they are used, never at import time.
"""

from gannas_jax.evaluate import EvalResult, Evaluator
from gannas_jax.spaces import NB201Space, SequentialSpace, Space, isomorphism_key

__version__ = "0.1.0"

__all__ = [
    "EvalResult",
    "Evaluator",
    "NB201Space",
    "SequentialSpace",
    "Space",
    "isomorphism_key",
    "__version__",
]

# --- adversarial core (gan/, decode.py): imports and `__all__ += [...]` go below this line ---
from gannas_jax.decode import DECODE_MODES, decode, decode_one
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

__all__ += [
    "DECODE_MODES",
    "Discriminator",
    "GanConfig",
    "GanState",
    "Generator",
    "LOSSES",
    "decode",
    "decode_one",
    "discriminate",
    "fit_gan",
    "gan_step",
    "generate",
    "init_gan",
]


# --- children, evaluation, parallelism, data (child/, evaluate/, parallel.py, data.py) ---
from gannas_jax.child import (
    Child,
    NB201Child,
    SequentialChild,
    make_child,
    static_nb201,
    static_sequential,
)
from gannas_jax.data import Dataset, DatasetUnavailableError, batch_indices, batches, load_dataset
from gannas_jax.evaluate.training import TrainConfig, TrainingEvaluator
from gannas_jax.parallel import (
    ChildState,
    fit_data_parallel,
    population_parallel,
    train_step,
    use_compilation_cache,
    use_cpu_cores,
)

__all__ += [
    "Child",
    "ChildState",
    "Dataset",
    "DatasetUnavailableError",
    "NB201Child",
    "SequentialChild",
    "TrainConfig",
    "TrainingEvaluator",
    "batch_indices",
    "batches",
    "fit_data_parallel",
    "load_dataset",
    "make_child",
    "population_parallel",
    "static_nb201",
    "static_sequential",
    "train_step",
    "use_compilation_cache",
    "use_cpu_cores",
]

# --- search (search/) ---
