"""Data and population parallelism on 4 forced CPU devices (acceptance item 4).

The device count must be set before JAX initializes its backends, which one pytest process cannot
guarantee, so the checks run in a subprocess with ``XLA_FLAGS`` set; it prints one JSON line of
measured differences that the tests assert on.
"""

import json
import os
import subprocess
import sys
import textwrap

import chex
import jax
import numpy as np
import optax
import pytest

import gannas_jax as gj
from gannas_jax import SequentialSpace, parallel
from gannas_jax.child import make_child
from gannas_jax.train import ChildState, SlotSparse, fit, init_state

pytestmark = pytest.mark.accelerator  # the paths GPUs and TPUs take (scripts/gpu_check.sh)

SCRIPT = textwrap.dedent(
    """
    import json
    import jax, jax.numpy as jnp, numpy as np, optax
    from gannas_jax import SequentialSpace, parallel
    from gannas_jax.child import make_child
    from gannas_jax.data import digits, batch_indices
    from gannas_jax.evaluate import TrainingEvaluator
    from gannas_jax.train import TrainConfig, fit, init_state

    assert jax.local_device_count() == 4, jax.devices()
    space = SequentialSpace(num_stages=2, slots_per_stage=2, kernel_sizes=(1, 3), channels=(2, 4),
                            num_fc=1, fc_widths=(8,))
    ds = digits()
    child = make_child(space, ds.input_shape, 10, conv_impl="blocked")
    # SGD: its update is linear in the gradient, so float reassociation in the cross-device mean
    # stays at 1e-7 (Adam divides by sqrt(v) and would amplify it on near-zero gradients).
    tx = optax.sgd(0.05, momentum=0.9)
    arch = jnp.asarray(space.from_string("[conv3x3-4 relu] [max_pool conv1x1-2] [fc8-tanh]"))
    idx = batch_indices(len(ds.x_train), 16, 5, 0)
    x, y = jnp.asarray(ds.x_train[idx]), jnp.asarray(ds.y_train[idx])
    # jitted: eager init compiles each of its ops apart (5 s against 0.6 s)
    state = jax.jit(lambda k: init_state(child, tx, k, arch))(jax.random.key(0))
    ref_state, ref_loss = jax.jit(lambda s: fit(child, tx, s, arch, x, y))(state)
    out = {}
    for runner in ("shard_map", "pmap"):
        st, loss = parallel.fit_data_parallel(child, tx, state, arch, x, y, runner=runner)
        out[runner] = {
            "loss": float(np.max(np.abs(np.asarray(loss) - np.asarray(ref_loss)))),
            "params": max(float(np.max(np.abs(np.asarray(a) - np.asarray(b))))
                          for a, b in zip(jax.tree.leaves(st.params),
                                          jax.tree.leaves(ref_state.params), strict=True)),
        }
    # An NB201 child has BatchNorm: its batch statistics must be the global batch's.
    from gannas_jax import NB201Space
    nb = NB201Space()
    nb_child = make_child(nb, ds.input_shape, 10, nb201_channels=4, nb201_cells=1)
    nb_arch = jnp.asarray(nb.from_string(
        "|nor_conv_3x3~0|+|nor_conv_1x1~0|skip_connect~1|+|nor_conv_3x3~0|avg_pool_3x3~1|none~2|"))
    nb_state = jax.jit(lambda k: init_state(nb_child, tx, k, nb_arch))(jax.random.key(0))
    nb_ref, nb_ref_loss = jax.jit(lambda s: fit(nb_child, tx, s, nb_arch, x, y))(nb_state)
    # Each NB201 data-parallel program compiles in ~17 s here: shard_map on 2 devices, pmap (the
    # same per-device step) on 4.
    for runner, n in (("shard_map", 2), ("pmap", 4)):
        st, loss = parallel.fit_data_parallel(
            nb_child, tx, nb_state, nb_arch, x, y, runner=runner,
            devices=jax.local_devices()[:n])
        out[f"nb201_{runner}_{n}"] = {
            "loss": float(np.max(np.abs(np.asarray(loss) - np.asarray(nb_ref_loss)))),
            "params": max(float(np.max(np.abs(np.asarray(a) - np.asarray(b))))
                          for a, b in zip(jax.tree.leaves((st.params, st.batch_stats)),
                                          jax.tree.leaves((nb_ref.params, nb_ref.batch_stats)),
                                          strict=True)),
        }
    cfg = TrainConfig(steps=4, batch_size=8, population=4, learning_rate=1e-2)
    archs = np.asarray(space.sample(jax.random.key(1), 4))
    pop = TrainingEvaluator(space, ds, cfg)
    one = TrainingEvaluator(space, ds, TrainConfig(**{**cfg.__dict__, "devices": 1}))
    a, b = pop.train(archs, jax.random.key(2)), one.train(archs, jax.random.key(2))
    out["population"] = {
        "devices": pop.n_devices,
        "loss": float(np.max(np.abs(a["loss"] - b["loss"]))),
        "val": float(np.max(np.abs(a["val"] - b["val"]))),
    }
    # Padding: batches that do not fill the devices. The reference trains each architecture
    # alone on one device (population 1: no padding, no neighbours, no device split).
    archs5 = np.asarray(space.sample(jax.random.key(3), 5))
    alone = TrainingEvaluator(space, ds, TrainConfig(**{**cfg.__dict__, "devices": 1,
                                                        "population": 1}))
    two = TrainingEvaluator(space, ds, TrainConfig(**{**cfg.__dict__, "devices": 2}))
    key = jax.random.key(4)
    keys5 = [jax.random.fold_in(key, c) for c in (0, 0, 0, 0, 1)]  # evaluate's chunk keys
    ref = [alone.train(a[None], k) for a, k in zip(archs5, keys5)]
    ref = {f: np.concatenate([r[f] for r in ref]) for f in ("val", "test", "loss", "loss0")}

    def diffs(got, n):  # the result counts, and the differences of the first n results
        return {"n": {f: len(got[f]) for f in ref},
                **{f: float(np.max(np.abs(got[f][:n] - ref[f][:n]))) for f in ref}}

    res5 = pop.evaluate(archs5, key)  # chunks of 4 and of 1 + 3 padding members
    pad = tuple(int(c) for c in space.canonicalize(np.zeros(space.num_variables, np.int32)))
    out["padding"] = {
        "devices": [two.n_devices, pop.n_devices],
        "3_on_2": diffs(two.train(archs5[:3], keys5[0]), 3),
        "3_on_4": diffs(pop.train(archs5[:3], keys5[0]), 3),
        "5_on_4": {"n": len(res5.scores),
                   "val": float(np.max(np.abs(res5.scores - ref["val"]))),
                   "test": float(np.max(np.abs(res5.test - ref["test"]))),
                   "loss": max(abs(m["train_loss"] - float(l))
                               for m, l in zip(res5.metrics, ref["loss"], strict=True)),
                   "cached": len(pop._cache), "pad_cached": pad in pop._cache},
    }
    print(json.dumps(out))
    """
)


@pytest.fixture(scope="module")
def multi_device():
    env = dict(
        os.environ,
        XLA_FLAGS=f"{os.environ['XLA_FLAGS']} --xla_force_host_platform_device_count=4",
        JAX_PLATFORMS="cpu",
    )
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, env=env, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("runner", ["shard_map", "pmap"])
def test_data_parallel_matches_single_device(multi_device, runner):
    assert multi_device[runner]["loss"] < 1e-5
    assert multi_device[runner]["params"] < 1e-5


@pytest.mark.parametrize("runner, devices", [("shard_map", 2), ("pmap", 4)])
def test_batchnorm_data_parallel_matches_single_device(multi_device, runner, devices):
    """An NB201 child (BatchNorm): the statistics are synchronised over the data axis, so
    parameters and running statistics equal single-device fit's (they differed by 0.2-0.3
    when each device normalised by its own shard)."""
    got = multi_device[f"nb201_{runner}_{devices}"]
    assert got["loss"] < 1e-5
    assert got["params"] < 1e-5


def test_population_parallel_matches_single_device(multi_device):
    assert multi_device["population"]["devices"] == 4
    assert multi_device["population"]["loss"] < 1e-5
    assert multi_device["population"]["val"] == 0.0


@pytest.mark.parametrize("case, n", [("3_on_2", 3), ("3_on_4", 3)])
def test_padded_population_matches_each_child_alone(multi_device, case, n):
    """Fewer architectures than the devices' places (3 on 2 devices of 2, 3 on 4 devices of
    1): the padding members are dropped, and each real one gets what training it alone on one
    device gives."""
    got = multi_device["padding"][case]
    assert got["n"] == {"val": n, "test": n, "loss": n, "loss0": n}
    assert got["loss"] < 1e-5 and got["loss0"] < 1e-5
    assert got["val"] == 0.0 and got["test"] == 0.0


def test_padded_evaluate_chunks_match_each_child_alone(multi_device):
    """evaluate() of 5 architectures on 4 devices (a full chunk, then 1 and 3 padding members):
    5 results, each the child's trained alone, and only the 5 real architectures cached."""
    assert multi_device["padding"]["devices"] == [2, 4]
    got = multi_device["padding"]["5_on_4"]
    assert got["n"] == 5 and got["loss"] < 1e-5
    assert got["val"] == 0.0 and got["test"] == 0.0
    assert got["cached"] == 5 and not got["pad_cached"]


def test_single_device_runner_and_bad_arguments():
    """In this process (one device): each runner, shard_map and pmap, degenerates to the plain
    fit (same losses and final params); errors are clear."""
    space = SequentialSpace(
        num_stages=1, slots_per_stage=1, kernel_sizes=(3,), channels=(2,), num_fc=0
    )
    child = make_child(space, (8, 8, 1), 10)
    tx = optax.sgd(0.1)
    arch = np.asarray(space.from_string("[conv3x3-2] []"))
    x = jax.random.normal(jax.random.key(0), (2, 6, 8, 8, 1))
    y = jax.random.randint(jax.random.key(1), (2, 6), 0, 10)
    state = jax.jit(lambda k: init_state(child, tx, k, arch))(jax.random.key(2))
    want_state, want = fit(child, tx, state, arch, x, y)
    for runner in parallel.RUNNERS:
        got_state, got = parallel.fit_data_parallel(
            child, tx, state, arch, x, y, runner=runner, devices=jax.local_devices()[:1]
        )
        np.testing.assert_allclose(got, want, rtol=1e-6, err_msg=runner)
        chex.assert_trees_all_close(got_state.params, want_state.params, rtol=1e-6, atol=1e-7)
    assert parallel.RUNNERS == ("shard_map", "pmap")
    with pytest.raises(ValueError, match="runner"):
        parallel.fit_data_parallel(child, tx, state, arch, x, y, runner="xmap")


USE_CORES = """
import json, os, jax
import gannas_jax as gj
out = {"returned": gj.use_cpu_cores(int(os.environ["WANT"]) if os.environ.get("WANT") else None)}
jax.numpy.zeros(1).block_until_ready()
out["devices"] = len(jax.devices())
out["after_start"] = gj.use_cpu_cores(3)  # a started backend is left alone
print(json.dumps(out))
"""


@pytest.mark.parametrize(
    "env, expected",
    [({"WANT": "2"}, 2), ({"GANNAS_CPU_DEVICES": "3"}, 3), ({"GANNAS_CPU_DEVICES": "1"}, 1)],
)
def test_use_cpu_cores_splits_the_host_before_jax_starts(env, expected):
    full = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "GANNAS_CPU_DEVICES")}
    proc = subprocess.run(
        [sys.executable, "-c", USE_CORES],
        capture_output=True,
        text=True,
        env={**full, **env},
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["devices"] == expected
    assert out["after_start"] == (expected if expected > 1 else -1)


def test_use_cpu_cores_rejects_bad_counts(monkeypatch):
    monkeypatch.setenv("GANNAS_CPU_DEVICES", "many")
    with pytest.raises(ValueError, match="GANNAS_CPU_DEVICES"):
        gj.use_cpu_cores()
    with pytest.raises(ValueError, match=">= 1"):
        gj.use_cpu_cores(0)


@pytest.mark.parametrize("rule", ["adam", "sgd"])
def test_slot_sparse_matches_the_dense_rule(rule):
    """SlotSparse updates only the conv slots of the stacked stage kernels, and gives the dense
    rule's losses and params: the dead slots' gradients and moments are exactly zero."""
    space = SequentialSpace(
        num_stages=2,
        slots_per_stage=3,
        kernel_sizes=(1, 3),
        channels=(2, 4),
        num_fc=1,
        fc_widths=(8,),
    )
    child = make_child(space, (8, 8, 1), 10, conv_impl="blocked")
    assert child.slot_leaves == ("stage0_kernel", "stage1_kernel")
    lr = optax.linear_schedule(
        0.05, 0.01, 4
    )  # a schedule: the counts must advance as the dense rule's
    inner = optax.adam(lr) if rule == "adam" else optax.sgd(lr, momentum=0.9)
    sparse, dense = SlotSparse(inner, child.slot_leaves), optax.flatten(inner)
    # stage 0: a conv in the middle slot; stage 1: convs in the first and last slots
    arch = np.asarray(
        space.from_string("[relu conv3x3-4 max_pool] [conv1x1-2 tanh conv3x3-4] [fc8-relu]")
    )
    plan = child.plan(arch)
    slots, n = plan.live_slots["stage1_kernel"]
    assert int(n) == 2 and sorted(np.asarray(slots)[:2].tolist()) == [0, 2]
    x = jax.random.normal(jax.random.key(0), (4, 6, 8, 8, 1))
    y = jax.random.randint(jax.random.key(1), (4, 6), 0, 10)
    init = jax.jit(child.init)(jax.random.key(2), arch)
    out = {}
    for name, tx in (("sparse", sparse), ("dense", dense)):
        state = ChildState(init["params"], init["batch_stats"], jax.jit(tx.init)(init["params"]))
        out[name] = jax.jit(lambda s, tx=tx: fit(child, tx, s, plan, x, y))(state)
    (s_state, s_loss), (d_state, d_loss) = out["sparse"], out["dense"]
    chex.assert_trees_all_close(s_loss, d_loss, rtol=1e-5, atol=1e-6)
    chex.assert_trees_all_close(s_state.params, d_state.params, rtol=1e-5, atol=1e-6)
    for stage, k in enumerate(child.slot_leaves):  # dead slots untouched, live ones trained
        ops = np.asarray(space.split(arch)[0])[stage, :, 0]
        for slot, op in enumerate(ops):
            moved = np.any(
                np.asarray(s_state.params[k][slot]) != np.asarray(init["params"][k][slot])
            )
            assert moved == (op == 1), (k, slot, op)
