"""The README's Python examples run as written, in order, and print what their comments say."""

import contextlib
import io
import pathlib
import re

import numpy as np

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"


def _python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_readme_python_examples_run(nb201_dir, tmp_path, monkeypatch):
    blocks = _python_blocks()
    assert len(blocks) >= 5, "the README lost its Python examples"
    # The examples read $GANNAS_NB201_DIR, which CI sets relative to the checkout: pin it before
    # moving to tmp_path, where the examples write their run folders.
    monkeypatch.setenv("GANNAS_NB201_DIR", str(nb201_dir.resolve()))
    monkeypatch.chdir(tmp_path)
    ns: dict = {}
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        for i, block in enumerate(blocks):
            exec(compile(block, f"README.md python block {i}", "exec"), ns)
    printed = out.getvalue()

    # The search-space example: the official string and index of a sampled cell.
    assert re.search(r"\|\S+~0\|\+\|\S+~0\|\S+~1\|\+\|\S+~0\|\S+~1\|\S+~2\| \d+", printed)
    # The GAN example: shapes as its comments give them.
    assert ns["archs"].shape == (1000, 6) and ns["logits"].shape == (1000,)
    assert np.all(np.isfinite(np.asarray(ns["logits"])))
    # The whole search: a budget of unique queries, a best found in the table.
    result = ns["result"]
    assert len(result.scores) == 100 and result.best_score == max(result.scores)
    assert (tmp_path / "runs" / "nb201" / "result.json").is_file()
    # Training children: validation and test accuracies in percent.
    res = ns["res"]
    assert res.scores.shape == (4,) and np.all((res.scores >= 0) & (res.scores <= 100))
    # The batched child: 5 architectures x 2 images x 10 logits.
    assert ns["out"].shape == (5, 2, 10) and "(5, 2, 10)" in printed
    # The sequential string round-trips.
    assert printed.rstrip().splitlines()[-1].split()[1:3] == ["[conv3x3-16", "relu"]
