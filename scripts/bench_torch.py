"""JAX against PyTorch baselines, on the same machine in the same run.

Usage:
  python scripts/bench_torch.py gan   [--help for options]   # adversarial training steps/s
  python scripts/bench_torch.py child [--help for options]   # child training, architectures/min

Needs the `bench` extra (`pip install -e ".[bench]"`). Torch is imported only by these scripts.
"""

import importlib
import pathlib
import sys

MODES = {"gan": "bench_torch_gan", "child": "bench_torch_child"}


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in MODES:
        print(f"usage: bench_torch.py {{{','.join(MODES)}}} [options]", file=sys.stderr)
        return 2
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
    module = importlib.import_module(MODES[argv[0]])
    return module.main(argv[1:]) or 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
