"""TrainingEvaluator: one compile for any batch, vmap == map, caching, learning (items 2, 3)."""

import contextlib
import gc
import json

import chex
import jax
import numpy as np
import pytest

from gannas_jax import NB201Space, SequentialSpace
from gannas_jax.data import digits
from gannas_jax.evaluate import EvalResult, Evaluator, TrainingEvaluator
from gannas_jax.train import TrainConfig

SPACE = SequentialSpace(
    num_stages=2, slots_per_stage=2, kernel_sizes=(1, 3), channels=(2, 4), num_fc=1, fc_widths=(8,)
)
TINY = TrainConfig(steps=6, batch_size=8, population=4, learning_rate=1e-2, devices=1)


@pytest.fixture(scope="module")
def ds():
    return digits()


@pytest.fixture(scope="module")
def map_eval(ds):
    return TrainingEvaluator(
        SPACE, ds, TINY.__class__(**{**TINY.__dict__, "strategy": "map", "conv_impl": "blocked"})
    )


def _archs(seed, n):
    return np.asarray(SPACE.sample(jax.random.key(seed), n))


@contextlib.contextmanager
def program_compiles(name="jit(_population)"):
    """The XLA compiles of the evaluator's training program while the block runs, as JAX itself
    reports them (``jax.monitoring``), independent of the evaluator's own counters."""
    seen = []

    def listener(event, duration, fun_name=None, **_):
        if event == "/jax/core/compile/backend_compile_duration" and fun_name == name:
            seen.append(duration)

    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        yield seen
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)


def test_one_compile_for_three_batches_of_different_archs(map_eval):
    """Three batches of different architectures and sizes: XLA compiles the training program
    exactly once (counted by JAX's compile events, not by the evaluator), and the evaluator's
    own counters agree."""
    seen = []
    with program_compiles() as compiles:
        for seed, n in ((1, 4), (2, 3), (3, 2)):  # different archs and sizes (padded to P=4)
            res = map_eval.evaluate(_archs(seed, n), jax.random.key(seed))
            assert isinstance(res, EvalResult) and len(res.scores) == n
            seen.append(res)
    assert len(compiles) == 1
    assert map_eval.trace_count == 1 and map_eval.compile_count == len(compiles)
    for res in seen:
        assert np.all((res.scores >= 0) & (res.scores <= 100)) and np.all(np.isfinite(res.test))


def test_protocol_metrics_and_cache(map_eval):
    assert isinstance(map_eval, Evaluator)
    archs = _archs(7, 3)
    first = map_eval.evaluate(archs, jax.random.key(0))
    runs = map_eval.run_seconds
    again = map_eval.evaluate(archs[::-1], jax.random.key(99))  # cached: key no longer matters
    assert map_eval.run_seconds == runs  # nothing trained
    np.testing.assert_array_equal(again.scores, first.scores[::-1])
    assert all(m["cached"] for m in again.metrics) and not any(m["cached"] for m in first.metrics)
    m = first.metrics[0]
    for field in ("params", "flops", "wall_time_s", "train_loss", "val_acc", "test_acc", "arch"):
        assert field in m
    assert m["params"] > 0 and m["wall_time_s"] > 0
    json.dumps(first.metrics)


def test_result_independent_of_batch_position(map_eval):
    """A child's init key comes from its codes, so padding and neighbours do not change it."""
    ev = map_eval
    archs = _archs(11, 4)
    a = ev.train(archs, jax.random.key(5))
    b = ev.train(archs[[2, 0]], jax.random.key(5))
    np.testing.assert_allclose(b["loss"], a["loss"][[2, 0]], rtol=1e-6)
    np.testing.assert_array_equal(b["val"], a["val"][[2, 0]])


@pytest.mark.accelerator
def test_vmap_and_map_strategies_agree(map_eval, ds):
    vm = TrainingEvaluator(
        SPACE, ds, TrainConfig(**{**TINY.__dict__, "strategy": "vmap", "conv_impl": "masked"})
    )
    archs = _archs(21, 4)
    a = map_eval.train(archs, jax.random.key(3))
    b = vm.train(archs, jax.random.key(3))
    np.testing.assert_allclose(b["loss"], a["loss"], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(b["loss0"], a["loss0"], rtol=1e-5)
    # accuracies are counts of argmax hits: equal unless a float tie flips one example
    np.testing.assert_allclose(b["val"], a["val"], atol=100 / 359 + 1e-6)
    np.testing.assert_allclose(b["test"], a["test"], atol=100 / 359 + 1e-6)


@pytest.mark.accelerator
def test_vmap_masked_search_end_to_end(map_eval, ds, tmp_path):
    """The accelerator default (vmap over members, masked convolutions) through a whole search:
    GanNas asks, the vmapped program trains and scores, the driver writes the history."""
    from gannas_jax.search import run_search
    from gannas_jax.search.ganas import GanNas
    from tests.test_ganas import SMALL_GAN

    cfg = TrainConfig(**{**TINY.__dict__, "strategy": "vmap", "conv_impl": "masked"})
    vm = TrainingEvaluator(SPACE, ds, cfg)
    algo = GanNas(SPACE, batch_size=4, num_init=4, top_k=2, gan_steps=5, num_candidates=16,
                  gan=SMALL_GAN)  # fmt: skip
    res = run_search(algo, vm, 8, tmp_path / "run", 0, progress=False)
    assert res.num_queries == 8 and len({r.tobytes() for r in res.archs}) == 8
    assert np.all((res.scores >= 0) & (res.scores <= 100)) and np.isfinite(res.tests).all()
    assert len((tmp_path / "run" / "history.jsonl").read_text().splitlines()) == 8
    # both batches (the random warm-up, then the GAN's) ran one compiled program
    assert vm.trace_count == 1 and vm.compile_count == 1
    # the scores are the children's: the CPU default's training of the GAN's batch agrees
    # (accuracies are argmax hits, so a float tie may flip one example)
    key = jax.random.key(3)
    np.testing.assert_allclose(
        vm.train(res.archs[4:], key)["val"], map_eval.train(res.archs[4:], key)["val"],
        atol=100 / 359 + 1e-6,
    )  # fmt: skip


@pytest.mark.parametrize("conv_impl", ["masked"])
def test_conv_impls_train_like_blocked(map_eval, ds, conv_impl):
    other = TrainingEvaluator(
        SPACE, ds, TrainConfig(**{**TINY.__dict__, "strategy": "map", "conv_impl": conv_impl})
    )
    archs = np.concatenate(
        [_archs(31, 3), SPACE.from_string("[conv3x3-4 conv1x1-2] [conv3x3-4] [fc8-relu]")[None]]
    )
    a = map_eval.train(archs, jax.random.key(4))
    b = other.train(archs, jax.random.key(4))
    np.testing.assert_allclose(b["loss"], a["loss"], rtol=1e-4, atol=1e-5)


def test_auto_conv_impl_by_strategy():
    assert TrainConfig(strategy="map").resolved_conv_impl() == "blocked"
    assert TrainConfig(strategy="vmap").resolved_conv_impl() == "masked"
    assert TrainConfig(strategy="vmap", conv_impl="blocked").resolved_conv_impl() == "blocked"


def test_narrow_variant_trains_like_max_size_child(map_eval, ds):
    """Conv-less members trained by the narrow variant (the default with ``map``) get the max-size
    child's results, and the evaluator deals the others evenly over devices."""
    wide = TrainingEvaluator(
        SPACE,
        ds,
        TrainConfig(
            **{**TINY.__dict__, "strategy": "map", "conv_impl": "blocked", "narrow": False}
        ),
    )
    archs = np.stack(
        [
            SPACE.from_string(s)
            for s in (
                "[relu max_pool] [tanh] [fc8-relu]",
                "[conv3x3-4 relu] [] [fc8-tanh]",
                "[] [sigmoid avg_pool] []",
                "[avg_pool] [conv1x1-2] [fc8-sigmoid]",
            )
        ]
    )
    a = map_eval.train(archs, jax.random.key(8))
    b = wide.train(archs, jax.random.key(8))
    np.testing.assert_allclose(a["loss0"], b["loss0"], rtol=1e-6)
    np.testing.assert_allclose(a["loss"], b["loss"], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(a["val"], b["val"], atol=100 / 359 + 1e-6)
    # load balance: with 2 devices of 2 members, each device gets one of the two conv archs
    map_eval.n_devices = 2
    try:
        order = map_eval._balance(archs)
        # by cost: the two-conv member shares its device with the conv-less one, not a conv one
        costly = np.stack(
            [
                SPACE.from_string(s)
                for s in (
                    "[conv3x3-4] [] []",
                    "[conv3x3-4] [conv1x1-2] []",
                    "[] [relu] []",
                    "[conv1x1-2] [] [fc8-relu]",
                )
            ]
        )
        by_cost = map_eval._balance(costly)
    finally:
        map_eval.n_devices = 1
    assert sorted(order) == [0, 1, 2, 3]
    has_conv = ~np.asarray(map_eval.child.is_narrow(archs[order]))
    assert has_conv[:2].sum() == 1 and has_conv[2:].sum() == 1
    assert sorted(by_cost) == [0, 1, 2, 3]
    assert {frozenset(by_cost[:2]), frozenset(by_cost[2:])} == {
        frozenset({1, 2}),
        frozenset({0, 3}),
    }


def test_children_learn(ds):
    cfg = TrainConfig(steps=150, population=2, devices=1, learning_rate=1e-2)
    ev = TrainingEvaluator(SPACE, ds, cfg)
    archs = np.stack(
        [SPACE.from_string("[conv3x3-4 relu] [] [fc8-relu]"), SPACE.from_string("[] [] []")]
    )
    out = ev.train(archs, jax.random.key(0))
    assert np.all(out["loss"] < 0.6 * out["loss0"]), out
    assert np.all(out["val"] > 50), (
        out
    )  # chance is 10%; the full recipe is checked by the benchmark


def test_nb201_evaluator_compiles_once_and_runs(ds):
    cfg = TrainConfig(
        steps=2, batch_size=4, population=2, nb201_channels=2, nb201_cells=1, devices=1
    )
    ev = TrainingEvaluator(NB201Space(), ds, cfg)
    space = NB201Space()
    with program_compiles() as compiles:
        r1 = ev.evaluate(np.asarray(space.sample(jax.random.key(0), 2)), jax.random.key(0))
        r2 = ev.evaluate(np.asarray(space.sample(jax.random.key(1), 2)), jax.random.key(1))
    assert len(compiles) == 1  # measured by JAX
    assert ev.trace_count == 1 and ev.compile_count == len(compiles)
    assert np.all(np.isfinite(np.concatenate([r1.scores, r2.scores])))
    assert r1.metrics[0]["params"] > 0


def test_config_validation():
    with pytest.raises(ValueError, match="strategy"):
        TrainConfig(strategy="pmap")
    with pytest.raises(ValueError, match="optimizer"):
        TrainConfig(optimizer="rmsprop")
    with pytest.raises(ValueError, match="steps"):
        TrainConfig(steps=0)
    with pytest.raises(ValueError, match="input"):
        TrainingEvaluator(SequentialSpace(input_shape=(28, 28, 1)), "digits")


def test_gc_paused_restores_the_collector_state():
    # The evaluator pauses Python's collector while it traces and compiles; it must give it back
    # as it found it, also when compiling raises.
    from gannas_jax.evaluate.training import _gc_paused

    assert gc.isenabled()
    with _gc_paused():
        assert not gc.isenabled()
    assert gc.isenabled()
    with pytest.raises(RuntimeError, match="boom"):
        with _gc_paused():
            raise RuntimeError("boom")
    assert gc.isenabled()
    gc.disable()
    try:
        with _gc_paused():
            pass
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_scoring_plan_keeps_logits_and_params(ds):
    """A scoring step (the plan without stage backward passes) gives the training plan's logits
    and loss and updates no stage weight, even at a non-zero learning rate, where the training
    step does move them; the head, whose gradients it keeps exact, gets the training step's
    update. Once the learning rate is frozen at 0 (the evaluator's scoring steps) neither plan
    moves any param."""
    from gannas_jax.child import make_child
    from gannas_jax.train import init_state, make_optimizer, train_step

    child = make_child(SPACE, ds.input_shape, ds.num_classes, conv_impl="blocked")
    # learning rate 1e-2 for the first update, exactly 0 from the second on
    tx = make_optimizer(TINY, freeze_after=1, slot_leaves=child.slot_leaves)
    x, y = jax.numpy.asarray(ds.x_train[:8]), jax.numpy.asarray(ds.y_train[:8])
    stage = np.asarray([[[1, 1, 1], [2, 0, 0]], [[1, 0, 1], [4, 0, 0]]])  # a conv in each stage
    arch = jax.numpy.asarray(np.concatenate([stage.reshape(-1), [1, 0]]), jax.numpy.int32)
    assert SPACE.to_string(arch).count("conv") == 2
    state = jax.jit(lambda k: init_state(child, tx, k, arch))(jax.random.key(0))
    plan = child.plan(arch)
    step = jax.jit(lambda st, p: train_step(child, tx, st, p, x, y, return_logits=True))
    scoring = child.scoring_plan(plan, jax.numpy.asarray(True))

    def split(params):  # (stage weights, head weights)
        stage_ = {k: v for k, v in params.items() if k.startswith("stage")}
        return stage_, {k: v for k, v in params.items() if not k.startswith("stage")}

    trained, loss, logits = step(state, plan)  # learning rate 1e-2
    scored, loss_s, logits_s = step(state, scoring)
    np.testing.assert_allclose(logits_s, logits, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(loss_s, loss, rtol=1e-6)
    (stage0, head0), (stage_t, head_t), (stage_s, head_s) = map(
        split, (state.params, trained.params, scored.params)
    )
    chex.assert_trees_all_equal(stage_s, stage0)  # no stage weight moved
    for k in child.slot_leaves:  # ... where training moves them, so this is no zero-lr check
        assert np.any(np.asarray(stage_t[k]) != np.asarray(stage0[k])), k
    chex.assert_trees_all_close(head_s, head_t, rtol=1e-6, atol=1e-7)
    for k in ("fc0_kernel", "out_hidden_kernel"):  # the live head layers
        assert np.any(np.asarray(head_t[k]) != np.asarray(head0[k])), k
    # frozen (the second update): neither plan moves anything, and the logits still agree
    _, loss_t, logits_t = step(trained, plan)
    for p in (plan, scoring):
        new, loss_f, logits_f = step(trained, p)
        np.testing.assert_allclose(logits_f, logits_t, rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(loss_f, loss_t, rtol=1e-6)
        chex.assert_trees_all_equal(new.params, trained.params)
    assert all(int(s.lo) == int(s.hi) for s in scoring.stages)
    assert all(int(live.n) == 0 for live in scoring.live_slots.values())
