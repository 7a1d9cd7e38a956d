"""run_search on a damaged workdir: resuming after a torn history line or a lost checkpoint, and
refusing, with one clear SearchError and without touching a file, a workdir that is not this
run's or whose files disagree."""

import json
import shutil

import numpy as np
import pytest

from gannas_jax import NB201Space
from gannas_jax.evaluate.base import EvalResult
from gannas_jax.search import RegularizedEvolution, SearchError, run_search
from tests.conftest import folder_digest

BUDGET = 20
SEED = 3
KILLED_AT = 13  # the evaluator call that "kills" the run: 12 queries are in history by then
SPACE = NB201Space()
# A small population, so that from query 6 on every query depends on the scores before it.
ALGO = RegularizedEvolution(SPACE, population_size=5, tournament_size=2)


class _Killed(Exception):
    """Stands in for a SIGKILL in the middle of an iteration."""


class _Fake:
    """A deterministic evaluator (a weighted sum of the codes) that counts its calls and raises
    _Killed on call ``die_at``. It reports a fixed wall time, so that history files of two runs
    are byte-comparable."""

    def __init__(self, die_at=None):
        self.space, self.calls, self.die_at = SPACE, 0, die_at

    def evaluate(self, archs, key):
        self.calls += 1
        if self.calls == self.die_at:
            raise _Killed
        x = np.asarray(archs)
        s = (x * np.arange(1, x.shape[1] + 1)).sum(1).astype(float)
        return EvalResult(scores=s, test=-s, metrics=[{"wall_time_s": 1.0} for _ in s])


def _search(workdir, evaluator=None, *, budget=BUDGET, seed=SEED, config=None, every=0.0):
    return run_search(
        ALGO,
        evaluator or _Fake(),
        budget,
        workdir,
        seed,
        config=config,
        progress=False,
        plot=False,
        checkpoint_every_s=every,
    )


def _kill(workdir, every):
    with pytest.raises(_Killed):
        _search(workdir, _Fake(die_at=KILLED_AT), every=every)


def _steps(workdir):
    return sorted(int(p.name) for p in (workdir / "checkpoints").iterdir() if p.name.isdigit())


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted run: (its result, its history.jsonl bytes)."""
    wd = tmp_path_factory.mktemp("reference")
    res = _search(wd)
    return res, (wd / "history.jsonl").read_bytes()


@pytest.fixture(scope="module")
def killed(tmp_path_factory):
    """A run killed on evaluator call KILLED_AT, checkpointing every iteration (checkpoints 11
    and 12 kept). Tests damage a copy of it."""
    wd = tmp_path_factory.mktemp("killed") / "run"
    _kill(wd, every=0.0)
    assert _steps(wd) == [KILLED_AT - 2, KILLED_AT - 1]
    assert len((wd / "history.jsonl").read_bytes().splitlines()) == KILLED_AT - 1
    return wd


def _assert_same_run(res, wd, reference):
    ref, ref_history = reference
    np.testing.assert_array_equal(res.archs, ref.archs)
    np.testing.assert_array_equal(res.scores, ref.scores)
    assert res.summary() == ref.summary()
    assert (wd / "history.jsonl").read_bytes() == ref_history


@pytest.mark.parametrize("every", [0.0, float("inf")], ids=["every-iteration", "first-only"])
def test_resume_after_a_torn_last_history_line(reference, tmp_path, every):
    """A kill in the middle of writing a history line leaves a partial last line. The resumed run
    drops it (and, when the checkpoint is older, the complete lines after the checkpoint too),
    redoes only the iterations after the checkpoint, and ends with the uninterrupted run's history,
    byte for byte."""
    _kill(tmp_path, every)
    done = KILLED_AT - 1 if every == 0 else 0  # the queries the checkpoint holds
    assert _steps(tmp_path)[-1] == done
    with open(tmp_path / "history.jsonl", "ab") as f:
        f.write(b'{"query": 12, "iteration": 12, "arch": "|nor_conv_3x3~0|+|av')  # no newline
    ev = _Fake()
    res = _search(tmp_path, ev, every=every)
    assert ev.calls == BUDGET - done  # one query per iteration, none before the checkpoint redone
    _assert_same_run(res, tmp_path, reference)


@pytest.mark.parametrize("how", ["deleted", "unfinished-save"])
def test_resume_after_losing_the_latest_checkpoint(reference, killed, tmp_path, how):
    """Without the newest checkpoint (deleted, or left as orbax's temporary folder by a kill during
    the save), the run resumes from the one before it: history is cut back to that checkpoint's
    queries, the iteration after it is redone with the same keys, and the run ends with the
    uninterrupted run's history, byte for byte."""
    wd = tmp_path / "run"
    shutil.copytree(killed, wd)
    newest = wd / "checkpoints" / str(KILLED_AT - 1)
    if how == "deleted":
        shutil.rmtree(newest)
    else:
        newest.rename(newest.with_name(f"{newest.name}.orbax-checkpoint-tmp-1700000000"))
    ev = _Fake()
    res = _search(wd, ev)
    assert ev.calls == BUDGET - (KILLED_AT - 2)
    _assert_same_run(res, wd, reference)
    assert _steps(wd)[-1] == BUDGET


def _set_history(lines_of):
    def damage(wd):
        lines = (wd / "history.jsonl").read_text().splitlines()
        (wd / "history.jsonl").write_text("".join(line + "\n" for line in lines_of(lines)))

    return damage


def _swap_arch(lines):
    """Line 4 names another architecture (a valid one, seen elsewhere in the run)."""
    rec = json.loads(lines[3])
    rec["arch"] = json.loads(lines[4])["arch"]
    return [*lines[:3], json.dumps(rec), *lines[4:]]


# (damage to the workdir, run_search arguments, the error's message)
_REFUSED = {
    "no-config": (lambda wd: (wd / "config.json").unlink(), {}, "holds results but no config.json"),
    "config-truncated": (
        lambda wd: (wd / "config.json").write_text('{"budget": 20, "se'),
        {},
        r"corrupt .*config\.json",
    ),
    "config-empty": (lambda wd: (wd / "config.json").write_text(""), {}, r"corrupt .*config\.json"),
    "config-not-an-object": (
        lambda wd: (wd / "config.json").write_text("[20, 3]"),
        {},
        r"corrupt .*config\.json: not a JSON object",
    ),
    "other-budget": (None, {"budget": BUDGET + 1}, r"another config \(differs in budget\)"),
    "other-seed": (None, {"seed": SEED + 1}, r"another config \(differs in seed\)"),
    "other-setting": (None, {"config": {"lr": 0.1}}, r"another config \(differs in lr\)"),
    "history-other-arch": (
        _set_history(_swap_arch),
        {},
        "history.jsonl and the checkpoint disagree",
    ),
    "history-short": (
        _set_history(lambda lines: lines[:5]),
        {},
        r"corrupt .*history\.jsonl: it has 5 complete lines, the checkpoint holds 12",
    ),
    "history-missing": (
        lambda wd: (wd / "history.jsonl").unlink(),
        {},
        r"history\.jsonl is missing, but the checkpoint holds 12",
    ),
    "no-checkpoint": (
        lambda wd: shutil.rmtree(wd / "checkpoints"),
        {},
        "history.jsonl has queries but there is no checkpoint",
    ),
}


@pytest.mark.parametrize("case", list(_REFUSED))
def test_inconsistent_workdir_is_refused_untouched(killed, tmp_path, case):
    """A workdir without a readable config.json object, of another config, or whose history and
    checkpoint disagree, is refused with one SearchError naming the problem, and no file in it
    changes."""
    damage, kwargs, match = _REFUSED[case]
    wd = tmp_path / "run"
    shutil.copytree(killed, wd)
    if damage is not None:
        damage(wd)
    before = folder_digest(wd)
    ev = _Fake()
    with pytest.raises(SearchError, match=match):
        _search(wd, ev, **kwargs)
    assert ev.calls == 0
    assert folder_digest(wd) == before


def test_workdir_that_is_a_file_is_refused(tmp_path):
    """A --workdir naming a file is one SearchError, not a FileExistsError traceback."""
    path = tmp_path / "run"
    path.write_text("not a folder")
    with pytest.raises(SearchError, match="is not a folder"):
        _search(path)
    assert path.read_text() == "not a folder"
