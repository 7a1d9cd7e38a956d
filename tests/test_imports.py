"""Importing the package pulls in no heavy optional dependency."""

import json
import subprocess
import sys


def test_import_is_light():
    code = (
        "import sys, json, gannas_jax; "
        "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    top = set(json.loads(out.stdout.strip().splitlines()[-1]))
    assert "gannas_jax" in top
    heavy = {"tensorflow_datasets", "tensorflow", "torch", "matplotlib"} & top
    assert not heavy, f"import gannas_jax pulled in {heavy}"
