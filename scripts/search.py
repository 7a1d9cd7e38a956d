"""Runs one architecture search and writes history, checkpoints, result and plot to a workdir.

Usage:
  python scripts/search.py --config configs/digits.py --workdir runs/digits
  python scripts/search.py --config configs/nb201.py --workdir runs/nb201 \
      --config.dataset=cifar10 --config.algorithm=ganas --config.budget=150 --config.seed=0

Several processes (one per host, or several on one host) run one search together on
jax.distributed: give each the same command plus --coordinator=HOST:PORT --num_processes=N
--process_id=I (process 0 serves at HOST:PORT), or start them with srun / mpirun / on a Cloud
TPU slice, where the settings are detected. Only process 0 writes the workdir, which every process
must see (a shared filesystem).

Rerunning the same command on the same workdir resumes a killed run. Mistakes (an unknown
algorithm or dataset, a missing benchmark folder, a bad budget, a workdir of another run, corrupt
files) are reported in one line with exit code 2; set GANNAS_DEBUG=1 for the traceback.
"""

import json
import os
import sys

from absl import flags
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file("config", None, "Search config file (configs/*.py).")
_WORKDIR = flags.DEFINE_string("workdir", None, "Folder for history, checkpoints and results.")
_XLA_CACHE = flags.DEFINE_string(
    "xla_cache",
    None,
    "Folder of the persistent XLA compilation cache (a rerun or a resumed run skips "
    "compiling); default $GANNAS_XLA_CACHE or ~/.cache/gannas_jax/xla; '' disables it.",
)
_COORDINATOR = flags.DEFINE_string(
    "coordinator", None, "Multi-process run: HOST:PORT of process 0 (jax.distributed)."
)
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Multi-process run: process count.")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "Multi-process run: this process's index.")
_INIT_TIMEOUT = flags.DEFINE_integer(
    "init_timeout_s", 120, "Multi-process run: seconds to wait for every process to connect."
)


def fail(msg: str) -> int:
    print(f"search.py: error: {msg}", file=sys.stderr)
    return 2


def main(argv: list[str]) -> int:
    try:
        flags.FLAGS(argv)
    except (flags.Error, ValueError, FileNotFoundError, AttributeError, KeyError) as err:
        return fail(" ".join(str(err).split()) or type(err).__name__)
    if _CONFIG.value is None:
        return fail("--config is required, e.g. --config configs/digits.py")
    if not _WORKDIR.value:
        return fail("--workdir is required")
    config = _CONFIG.value

    import jax

    from gannas_jax import distributed, use_compilation_cache, use_cpu_cores
    from gannas_jax.data import DatasetUnavailableError
    from gannas_jax.search import run_search
    from gannas_jax.search.factory import build

    try:
        # One XLA CPU device per core: child populations train on every core (no effect on GPU/TPU).
        use_cpu_cores()
        # Before JAX computes anything; a single process skips it.
        distributed.initialize(
            _COORDINATOR.value,
            _NUM_PROCESSES.value,
            _PROCESS_ID.value,
            init_timeout_s=_INIT_TIMEOUT.value,
        )
        use_compilation_cache(_XLA_CACHE.value)
        algorithm, evaluator = build(config)
        result = run_search(
            algorithm,
            evaluator,
            config.budget,
            _WORKDIR.value,
            config.seed,
            config=config.to_dict(),
        )
    except Exception as err:
        # A peer's death surfaces as a failed collective (or the watchdog ends the process first):
        # name the peer, and exit at once rather than wait at the shutdown barrier for it.
        lost = distributed.lost_processes(wait_s=distributed.LOSS_SEEN_WITHIN_S)
        if lost:
            print(
                f"search.py: error: {distributed.lost_message(lost)}", file=sys.stderr, flush=True
            )
            os._exit(1)
        if os.environ.get("GANNAS_DEBUG") or not isinstance(
            err, (ValueError, DatasetUnavailableError)
        ):
            raise
        return fail(" ".join(str(err).split()))
    if not distributed.is_primary():
        print(f"process {jax.process_index()}: done; process 0 wrote the results")
        return 0
    space = evaluator.space
    print(f"best architecture: {result.best_arch}")
    print(f"  validation accuracy {result.best_score:.2f}%   test accuracy {result.best_test:.2f}%")
    n_random = algorithm.random_warmup
    n_random = result.num_queries if n_random is None else min(n_random, result.num_queries)
    print(
        f"  {result.num_queries} queries (search space size {space.size:,}); mean validation "
        f"accuracy of all queries {result.scores.mean():.2f}%"
    )
    if n_random:
        r = result.scores[:n_random]
        print(
            f"  the {n_random} uniform random architectures: mean {r.mean():.2f}%, "
            f"median {float(sorted(r)[len(r) // 2]):.2f}%, best {r.max():.2f}%"
        )
    print(f"results in {_WORKDIR.value}/: history.jsonl, result.json, progress.png")
    print(json.dumps(result.summary()))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
