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


# The one-way flow of a config through the package: a module may import its own package and
# lower layers only (docs/design.md).
LAYERS = {
    "spaces": 0,
    "runtime": 0,
    "distributed": 0,
    "data": 1,
    "decode": 1,
    "child": 2,
    "train": 3,
    "parallel": 4,
    "evaluate": 5,
    "gan": 5,
    "search": 6,
}


def _package_modules():
    import pathlib

    root = pathlib.Path(__file__).resolve().parents[1] / "gannas_jax"
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root)
        if rel.parts == ("__init__.py",):
            continue
        yield rel.parts[0].removesuffix(".py"), path


def test_layers_import_one_way():
    import ast

    bad = []
    for top, path in _package_modules():
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            for name in names:
                parts = name.split(".")
                if parts[0] != "gannas_jax" or len(parts) < 2 or parts[1] not in LAYERS:
                    continue
                if parts[1] != top and LAYERS[parts[1]] >= LAYERS[top]:
                    bad.append(f"{path.name} ({top}) imports {name}")
    assert not bad, bad
    assert {top for top, _ in _package_modules()} <= set(LAYERS)


def test_modules_stay_small():
    sizes = {str(p): len(p.read_text().splitlines()) for _, p in _package_modules()}
    assert sizes and not {p: n for p, n in sizes.items() if n > 450}
