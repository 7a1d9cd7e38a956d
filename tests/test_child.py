"""Arch-as-data children against exact-size static builds (acceptance item 1), and their parts."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gannas_jax import NB201Space, SequentialSpace
from gannas_jax.child import (
    NB201Child,
    SequentialChild,
    extract_static_sequential,
    init_sequential,
    is_convless,
    load_static_nb201,
    load_static_sequential,
    make_child,
    narrow_params,
    nb201_cost,
    ops,
    sequential_cost,
    static_nb201,
    static_sequential,
)
from gannas_jax.child.ops.layers import TRUNC_STD

N_ARCHS = 50
N_GRAD = 16  # architectures whose gradients are checked too
# Small widths keep compile and eager static runs quick; every op kind, kernel and width choice
# of the layout is still exercised (1x1 convs, 3 channel widths incl. the input's, 2 head slots).
SEQ = SequentialSpace(
    input_shape=(8, 8, 2),
    num_classes=5,
    num_stages=2,
    slots_per_stage=3,
    kernel_sizes=(1, 3, 5),
    channels=(2, 3, 4),
    num_fc=2,
    fc_widths=(6, 8),
)


def _static_variables(module, x, seed, **kw):
    """Random variables for a static reference module, drawn with numpy on the shapes of its
    ``init``: Flax's initializers would compile anew for every architecture's parameter shapes.
    Kernels are fan-in scaled, biases non-zero (bias placement is checked too), running
    statistics non-trivial and variances positive."""
    rng = np.random.default_rng(seed)

    def draw(path, s):
        name = jax.tree_util.keystr(path)
        if "batch_stats" in name:
            return (rng.uniform(size=s.shape) + ("var" in name)).astype(np.float32)
        if "bn" in name:  # Flax's BN init: random affines make near-constant maps whose
            # train-mode normalization amplifies float rounding past the tolerance
            return np.full(s.shape, float("scale" in name), np.float32)
        if len(s.shape) == 1:
            return (0.1 + 0.1 * rng.standard_normal(s.shape)).astype(np.float32)
        return (rng.standard_normal(s.shape) / np.sqrt(np.prod(s.shape[:-1]))).astype(np.float32)

    shapes = jax.eval_shape(module.init, jax.random.key(0), x, **kw)
    return jax.tree_util.tree_map_with_path(draw, shapes)


@pytest.fixture(scope="module")
def seq_archs():
    return np.asarray(SEQ.sample(jax.random.key(0), N_ARCHS))


@pytest.fixture(scope="module")
def x_seq():
    return jax.random.normal(jax.random.key(1), (3, 8, 8, 2))


# Channels sharing a block of 4 (the image's 3 channels included in none): the blocked conv
# then loops over several channel blocks, where SEQ's widths (gcd 1) give it a single block.
SEQ4 = SequentialSpace(
    input_shape=(6, 6, 3),
    num_classes=4,
    num_stages=2,
    slots_per_stage=2,
    kernel_sizes=(1, 3),
    channels=(4, 8),
    num_fc=1,
    fc_widths=(6,),
)


@pytest.mark.parametrize(
    "space,conv_impl,n",
    [(SEQ, "blocked", N_ARCHS), (SEQ, "masked", N_ARCHS), (SEQ4, "blocked", 20)],
    ids=["blocked", "masked", "blocked-multiblock"],
)
def test_sequential_matches_static(space, conv_impl, n):
    """Outputs in both modes, and (for the first N_GRAD architectures) the gradients of every
    weight: the live windows equal the static child's gradients, and everything outside them is
    exactly zero, so training the max-size child trains the exact-size network."""
    seq_archs = np.asarray(space.sample(jax.random.key(0), n))
    x_seq = jax.random.normal(jax.random.key(1), (3, *space.input_shape))
    child = SequentialChild(space, conv_impl)
    grad_fn = _grad_fn(child, space, x_seq)
    # Both modes in one program (this space has no dropout or BatchNorm, so they are the same
    # computation, and XLA compiles it once): one compile for every architecture.
    apply = jax.jit(
        lambda p, a, x: (
            child.apply({"params": p}, a, x, False),
            child.apply({"params": p}, a, x, True),
        )
    )
    for i, arch in enumerate(seq_archs):
        static = static_sequential(space, arch)
        variables = _static_variables(static, x_seq, 100 + i)
        params = load_static_sequential(space, arch, variables["params"])
        got = apply(params, jnp.asarray(arch), x_seq)
        for train, got_mode in zip((False, True), got, strict=True):
            want = static.apply(variables, x_seq, train=train)
            np.testing.assert_allclose(
                got_mode, want, atol=1e-5, rtol=0, err_msg=space.to_string(arch)
            )
        back = extract_static_sequential(space, arch, params)
        chex.assert_trees_all_close(back, jax.tree.map(np.asarray, variables["params"]))
        if i < N_GRAD:
            _check_grads(grad_fn, space, arch, static, variables, params, x_seq)
    assert apply._cache_size() == 1  # one program for every architecture
    assert grad_fn._cache_size() == 1


def _grad_fn(child, space, x):
    cot = jax.random.normal(jax.random.key(2), (x.shape[0], space.num_classes))

    def loss(logits):
        return jnp.sum(jnp.tanh(logits) * cot)

    fn = jax.jit(
        lambda p, a, x: jax.grad(lambda p: loss(child.apply({"params": p}, a, x, True)))(p)
    )
    fn.loss = loss
    return fn


def _check_grads(grad_fn, space, arch, static, variables, params, x):
    """The max-size child's gradients are the static child's in the live windows, 0 elsewhere."""
    g = jax.tree.map(np.asarray, grad_fn(params, jnp.asarray(arch), x))
    want = jax.grad(lambda p: grad_fn.loss(static.apply({"params": p}, x)))(variables["params"])
    got = extract_static_sequential(space, arch, g)
    chex.assert_trees_all_close(got, jax.tree.map(np.asarray, want), atol=1e-5, rtol=1e-5)
    chex.assert_trees_all_equal(load_static_sequential(space, arch, got), g)


# The image's channel count (1) is no conv width, so a conv reading 1 channel has no weights
# upstream and its backward pass skips the input gradient: checked here (SEQ above has
# input channels among its widths, so it never skips).
SEQ1 = SequentialSpace(
    input_shape=(6, 6, 1),
    num_classes=3,
    num_stages=2,
    slots_per_stage=2,
    kernel_sizes=(1, 3),
    channels=(2, 4),
    num_fc=1,
    fc_widths=(4,),
)


@pytest.mark.parametrize("conv_impl", ["blocked", "masked"])
def test_sequential_gradients_when_image_convs_skip_the_input_gradient(conv_impl):
    archs = np.asarray(SEQ1.sample(jax.random.key(3), 40))
    archs = archs[~np.asarray(is_convless(SEQ1, archs))][:10]
    x = jax.random.normal(jax.random.key(4), (3, 6, 6, 1))
    child = SequentialChild(SEQ1, conv_impl)
    grad_fn = _grad_fn(child, SEQ1, x)
    for i, arch in enumerate(archs):
        static = static_sequential(SEQ1, arch)
        variables = _static_variables(static, x, 200 + i)
        _check_grads(
            grad_fn,
            SEQ1,
            arch,
            static,
            variables,
            load_static_sequential(SEQ1, arch, variables["params"]),
            x,
        )
    assert len(archs) == 10 and grad_fn._cache_size() == 1


def test_sequential_init_is_masked_and_exact_scaled(seq_archs, x_seq):
    """The arch-aware init has the module's structure, zeros outside the exact network, and the
    exact network's output does not depend on the masked entries."""
    child = SequentialChild(SEQ)
    template = jax.eval_shape(child.init, jax.random.key(0), seq_archs[0], x_seq)["params"]
    init = jax.jit(lambda k, a: init_sequential(SEQ, k, a))
    for i, arch in enumerate(seq_archs[:10]):
        params = init(jax.random.key(i), jnp.asarray(arch))
        chex.assert_trees_all_equal_shapes(params, template)
        # round trip through the static layout keeps everything: nothing lives outside it
        static = extract_static_sequential(SEQ, arch, params)
        again = load_static_sequential(SEQ, arch, static)
        chex.assert_trees_all_close(again, jax.tree.map(np.asarray, params))
        assert sum(int(np.count_nonzero(v)) for v in jax.tree.leaves(static)) > 0
    # Fan-in scaling. Lecun-normal draws a normal truncated at 2 std and divides by the
    # truncated std (TRUNC_STD), so each live entry has std exactly 1/sqrt(fan-in of the live
    # layer) and |w| <= 2 / TRUNC_STD / sqrt(fan-in). Over 1000 keys the smallest layer has
    # 12,000 draws, a std error of ~0.5%; a fan-out or max-size fan-in is off by 13% or more.
    arch = SEQ.from_string("[conv5x5-4 conv1x1-3] [conv3x3-2] [fc6-relu fc8-tanh]")
    keys = jax.random.split(jax.random.key(3), 1000)
    p = jax.jit(jax.vmap(lambda k: init_sequential(SEQ, k, jnp.asarray(arch))))(keys)
    flat_rows = np.arange(4 * 4 * 4) % 4 < 2  # the 4x4 map's 2 live channels of 4
    live = {  # name: (live entries [keys, ...], fan-in of the live layer)
        "conv5x5 2->4": (p["stage0_kernel"][:, 0, :, :, :2, :4], 5 * 5 * 2),
        "conv1x1 4->3": (p["stage0_kernel"][:, 1, 2:3, 2:3, :4, :3], 1 * 1 * 4),
        "conv3x3 3->2": (p["stage1_kernel"][:, 0, 1:4, 1:4, :3, :2], 3 * 3 * 3),
        "fc6 on 4x4x2": (p["fc0_kernel"][:, flat_rows, :6], 4 * 4 * 2),
        "fc8 on fc6": (p["fc1_kernel"][:, :6, :8], 6),
        "out on fc8": (p["out_hidden_kernel"][:, :8, :], 8),
    }
    for name, (w, fan) in live.items():
        z = np.asarray(w) * np.sqrt(fan)  # unit std when the scale is right
        np.testing.assert_allclose(np.sqrt(np.mean(z**2)), 1.0, rtol=0.02, err_msg=name)
        assert np.max(np.abs(z)) <= 2 / TRUNC_STD * (1 + 1e-6), name
    # nothing outside those windows is drawn
    n_live = sum(w[0].size for w, _ in live.values())
    assert sum(np.count_nonzero(v[0]) for v in p.values()) == n_live


def test_sequential_noncanonical_codes_equal_canonical(x_seq):
    """The child canonicalizes internally: codes with holes give the canonical network's output."""
    child = SequentialChild(SEQ)
    canon = SEQ.from_string("[conv3x3-4 relu] [max_pool] [fc8-tanh]")
    holes = np.array(canon)
    stage, head = SEQ.split(holes)
    stage = stage.copy()
    stage[0] = stage[0][[2, 0, 1]]  # an empty slot first
    head = head.copy()[[1, 0]]
    holes = np.concatenate([stage.reshape(-1), head.reshape(-1)])
    params = init_sequential(SEQ, jax.random.key(0), canon)
    apply = jax.jit(lambda p, a: child.apply({"params": p}, a, x_seq))
    a, b = apply(params, canon), apply(params, holes)
    np.testing.assert_allclose(a, b, atol=1e-6)


@pytest.mark.parametrize("narrow", [False, True])
def test_plan_gives_the_codes_output(seq_archs, x_seq, narrow):
    """Child.apply on a decoded plan (what the evaluator's training loop passes) and on the
    codes both equal the architecture's static exact-size Flax network on the same weights, for
    every conv impl's plan layout and the narrow variant."""
    archs = seq_archs[:8]
    if narrow:
        archs = np.asarray([a for a in seq_archs if bool(is_convless(SEQ, a))][:4])
    assert len(archs) == (4 if narrow else 8)
    wants = {}
    for impl in ("blocked", "masked"):
        wide = make_child(SEQ, SEQ.input_shape, SEQ.num_classes, conv_impl=impl)
        child = wide.narrow_variant() if narrow else wide

        @jax.jit
        def both(a, wide=wide, child=child):
            v = wide.init(jax.random.key(1), a)
            biased = {k: w + 0.1 if k.endswith("bias") else w for k, w in v["params"].items()}
            v = {**v, "params": biased}  # non-zero biases: their placement is checked too
            v_child = child.narrow_from(v) if narrow else v
            return (
                v["params"],
                child.apply(v_child, a, x_seq, train=True)[0],
                child.apply(v_child, child.plan(a), x_seq, train=True)[0],
            )

        for i, a in enumerate(archs):
            params, by_codes, by_plan = both(jnp.asarray(a))
            # the reference: the exact-size network built for this architecture alone (the
            # init does not depend on the conv impl, so it is built once per architecture)
            if i not in wants:
                static = static_sequential(SEQ, a)
                static_params = extract_static_sequential(SEQ, a, params)
                wants[i] = params, static.apply({"params": static_params}, x_seq)
            chex.assert_trees_all_equal(params, wants[i][0])
            want = wants[i][1]
            msg = f"{impl} {SEQ.to_string(a)}"
            np.testing.assert_allclose(by_plan, want, atol=1e-5, rtol=1e-5, err_msg=msg)
            np.testing.assert_allclose(by_codes, want, atol=1e-5, rtol=1e-5, err_msg=msg)


def test_narrow_child_matches_max_size_child_on_convless_archs(seq_archs, x_seq):
    """The narrow variant computes the max-size child's logits and gradients (cut down to its
    params) on every conv-less architecture, in training and inference mode."""
    stage_ops = SEQ.split(seq_archs)[0][..., 0]
    convless = seq_archs[np.all(stage_ops != 1, axis=(-2, -1))]
    extra = np.stack(
        [
            SEQ.from_string(s)
            for s in ("[] [] []", "[sigmoid max_pool tanh] [avg_pool relu] [fc8-sigmoid]")
        ]
    )
    convless = np.concatenate([convless, extra])
    assert len(convless) >= 5
    np.testing.assert_array_equal(
        is_convless(SEQ, seq_archs), np.all(stage_ops != 1, axis=(-2, -1))
    )
    assert bool(jax.jit(lambda a: is_convless(SEQ, a))(convless[0]))
    wide, narrow = SequentialChild(SEQ), SequentialChild(SEQ, narrow=True)
    y = jnp.arange(3) % SEQ.num_classes

    def loss(child, p, a, train):
        logits = child.apply({"params": p}, a, x_seq, train)
        return jnp.mean(jax.nn.log_softmax(logits)[jnp.arange(3), y]), logits

    @jax.jit
    def both(p, a):
        pn = narrow_params(SEQ, p)
        outs = []
        for train in (False, True):
            (_, lw), gw = jax.value_and_grad(
                lambda p, train=train: loss(wide, p, a, train), has_aux=True
            )(p)
            (_, ln), gn = jax.value_and_grad(
                lambda p, train=train: loss(narrow, p, a, train), has_aux=True
            )(pn)
            outs.append((lw, ln, narrow_params(SEQ, gw), gn))
        return outs

    for i, arch in enumerate(convless):
        params = init_sequential(SEQ, jax.random.key(i), arch)
        params = {
            k: v + 0.1 if k.endswith("bias") else v for k, v in params.items()
        }  # non-zero biases
        for lw, ln, gw, gn in both(params, jnp.asarray(arch)):
            np.testing.assert_allclose(ln, lw, atol=1e-5, rtol=0, err_msg=SEQ.to_string(arch))
            chex.assert_trees_all_close(gn, gw, atol=1e-5, rtol=1e-5)
    assert both._cache_size() == 1


@pytest.mark.parametrize(
    "kk,ci,co,bi,bo,n_in,n_out,hw",
    [
        (3, 8, 8, 2, 4, 3, 1, 6),
        (5, 8, 12, 4, 4, 1, 3, 6),
        (1, 4, 4, 1, 1, 4, 4, 6),
        (7, 8, 8, 4, 4, 2, 1, 4),
        (5, 4, 8, 2, 4, 1, 2, (3, 4)),
    ],
)
def test_conv_blocks_matches_conv_on_live_channels(kk, ci, co, bi, bo, n_in, n_out, hw):
    """The block loop equals one convolution on the live channels, in value and both gradients.
    On maps smaller than the kernel (the last two cases) each block is a dense matmul."""
    live_in, live_out = n_in * bi, n_out * bo
    h, w_ = (hw, hw) if isinstance(hw, int) else hw
    x = jax.random.normal(jax.random.key(0), (2, h, w_, ci)).at[..., live_in:].set(0.0)
    w = jax.random.normal(jax.random.key(1), (kk, kk, ci, co))
    g = jax.random.normal(jax.random.key(2), (2, h, w_, co))

    def ref(x, w):
        y = ops.conv_same_nobias(x[..., :live_in], w[:, :, :live_in, :live_out])
        return jnp.pad(y, ((0, 0), (0, 0), (0, 0), (0, co - live_out)))

    @jax.jit
    def blocks(x, w, a, b):
        return jax.value_and_grad(
            lambda x, w: jnp.sum(ops.conv_blocks(x, w, a, b, bi, bo) * g), (0, 1)
        )(x, w)

    (v, (dx, dw)) = blocks(x, w, n_in, n_out)
    want_v, (want_dx, want_dw) = jax.value_and_grad(lambda x, w: jnp.sum(ref(x, w) * g), (0, 1))(
        x, w
    )
    np.testing.assert_allclose(v, want_v, rtol=1e-5)
    np.testing.assert_allclose(dw, want_dw, atol=1e-4)
    np.testing.assert_allclose(dx[..., :live_in], want_dx[..., :live_in], atol=1e-4)


def test_sequential_cost_matches_static_param_count(seq_archs, x_seq):
    for arch in seq_archs[:10]:
        v = jax.eval_shape(static_sequential(SEQ, arch).init, jax.random.key(0), x_seq)
        n = sum(int(np.prod(a.shape)) for a in jax.tree.leaves(v["params"]))
        assert sequential_cost(SEQ, arch)["params"] == n


NB = NB201Space()
NB_KW = dict(channels=3, cells=1, num_classes=4)
N_NB201 = 30  # every op on every edge (checked below): each compiles its own static net


@pytest.fixture(scope="module")
def nb_setup():
    x = jax.random.normal(jax.random.key(2), (4, 8, 8, 3))
    archs = np.asarray(NB.sample(jax.random.key(5), N_NB201))
    child = NB201Child(NB, **NB_KW)
    template = jax.jit(child.init)(jax.random.key(0), archs[0], x)
    apply = jax.jit(
        lambda v, a, x, train: child.apply(v, a, x, train=train, mutable=["batch_stats"]),
        static_argnums=3,
    )
    return x, archs, template, apply


def test_nb201_matches_static(nb_setup):
    """The arch-as-data NB201 child equals the static network of each cell on the same
    variables: logits in both modes, and every running statistic, leaf by leaf (the taken ops'
    updated as the static BatchNorms update theirs, the untaken ops' and inference mode's
    unchanged)."""
    x, archs, template, apply = nb_setup
    assert all(len(set(archs[:, e])) == len(NB.ops) for e in range(archs.shape[1]))
    for i, arch in enumerate(archs):
        static = static_nb201(NB, arch, **NB_KW)
        # non-trivial running statistics, so inference mode is a real check
        v = _static_variables(static, x, 10 + i)
        cv = load_static_nb201(NB, arch, v, template)
        for train in (False, True):
            msg = f"{NB.to_string(arch)} train={train}"
            want, want_stats = static.apply(v, x, train=train, mutable=["batch_stats"])
            got, got_stats = apply(cv, jnp.asarray(arch), x, train)
            np.testing.assert_allclose(got, want, atol=1e-5, rtol=0, err_msg=msg)
            # the static net's new statistics in the child's layout; the entries of ops the
            # cell does not take keep cv's values, which the child must leave as they were
            want_cv = load_static_nb201(
                NB, arch, {**v, "batch_stats": want_stats["batch_stats"]}, cv
            )
            chex.assert_trees_all_equal_structs(got_stats["batch_stats"], want_cv["batch_stats"])
            for name, w in want_cv["batch_stats"].items():
                np.testing.assert_allclose(
                    got_stats["batch_stats"][name], w, atol=1e-6, rtol=1e-5, err_msg=f"{msg} {name}"
                )


def test_nb201_untaken_ops_keep_their_stats(nb_setup):
    x, _, template, apply = nb_setup
    arch = NB.from_string(
        "|nor_conv_3x3~0|+|skip_connect~0|none~1|+|avg_pool_3x3~0|none~1|nor_conv_1x1~2|"
    )
    _, upd = apply(template, jnp.asarray(arch), x, True)
    new, old = upd["batch_stats"], template["batch_stats"]
    # edge 0 runs its 3x3 BN only; edge 5 its 1x1 BN only; the other edges touch neither
    for e in range(6):
        changed3 = not np.allclose(new["cells0_bn3_mean"][0, e], old["cells0_bn3_mean"][0, e])
        changed1 = not np.allclose(new["cells0_bn1_mean"][0, e], old["cells0_bn1_mean"][0, e])
        assert changed3 == (e == 0) and changed1 == (e == 5), e


def _member_variables(template, n, seed):
    """Variables of ``n`` NB201 members ``[n, ...]`` on the child's template: its kernels
    scaled at random, BatchNorm affines near (1, 0), non-trivial running statistics."""
    rng = np.random.default_rng(seed)

    def draw(path, a):
        name, shape = jax.tree_util.keystr(path), (n, *np.shape(a))
        if name.endswith("_var']"):
            return (1 + rng.uniform(size=shape)).astype(np.float32)
        if name.endswith("_mean']"):
            return (0.3 * rng.standard_normal(shape)).astype(np.float32)
        if "scale" in name:
            return (1 + 0.1 * rng.standard_normal(shape)).astype(np.float32)
        if "bias" in name:
            return (0.1 * rng.standard_normal(shape)).astype(np.float32)
        return (np.asarray(a)[None] * rng.uniform(0.5, 1.5, shape)).astype(np.float32)

    return jax.tree_util.tree_map_with_path(draw, template)


def test_nb201_vmap_matches_map(nb_setup):
    """BatchNorm children under the evaluator's two batching modes (TrainConfig.strategy): vmap
    over the members, where each lax.switch becomes a select over every op, gives each member
    the training-mode logits and updated running statistics that lax.map (one member at a time)
    gives, and the same inference logits from those statistics."""
    x, archs, template, _ = nb_setup
    child = NB201Child(NB, **NB_KW)
    archs = jnp.asarray(archs[:4])
    variables = _member_variables(template, len(archs), 7)

    def member(v, a):
        logits, upd = child.apply(v, a, x, train=True, mutable=["batch_stats"])
        return logits, upd["batch_stats"], child.apply({**v, **upd}, a, x, train=False)

    both = jax.jit(
        lambda v, a: (jax.vmap(member)(v, a), jax.lax.map(lambda va: member(*va), (v, a)))
    )
    (logits, stats, inference), (want_logits, want_stats, want_inference) = both(variables, archs)
    np.testing.assert_allclose(logits, want_logits, atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(inference, want_inference, atol=1e-5, rtol=1e-5)
    chex.assert_trees_all_close(stats, want_stats, atol=1e-6, rtol=1e-5)
    # the members' statistics differ, so statistics shared between them would show
    assert np.ptp(np.asarray(want_stats["stem_bn_mean"]), axis=0).min() > 1e-2


def test_nb201_chunked_inference_equals_unchunked(nb_setup):
    """The evaluator scores BatchNorm children by inference in equal chunks of at most
    ``eval_batch_size`` examples, the last one padded (``train.population.correct``): which
    examples are classified right does not depend on the chunking (inference normalises by the
    running statistics, never by the chunk's)."""
    from gannas_jax.train.population import correct

    _, archs, template, _ = nb_setup
    child = make_child(NB, (8, 8, 3), NB_KW["num_classes"], nb201_channels=3, nb201_cells=1)
    v = jax.tree.map(lambda a: a[0], _member_variables(template, 1, 11))
    arch, n = jnp.asarray(archs[3]), 11
    # per-example channel offsets, so that the logits depend on the example (they survive the
    # global average pool)
    x = jax.random.normal(jax.random.key(6), (n, 8, 8, 3))
    x = x + 2 * jax.random.normal(jax.random.key(7), (n, 1, 1, 3))

    @jax.jit
    def score(v, y):  # unchunked logits; one chunk; 3 chunks of 4; 2 chunks of 6
        logits = child.apply(v, arch, x, train=False)[0]
        return logits, [correct(child, v, arch, x, y, c) for c in (n, 4, 6)]

    # Centre the logits over the examples with the classifier bias, so that the predicted class
    # varies by example: a misordered or dropped chunk then shows.
    logits = np.asarray(score(v, jnp.zeros(n, jnp.int32))[0])
    v["params"]["classifier_bias"] = v["params"]["classifier_bias"] - logits.mean(axis=0)
    right = np.arange(n) % 3 != 1  # labels right on two examples of three, wrong on the others
    logits = np.sort(logits - logits.mean(axis=0), axis=-1)
    assert np.min(logits[:, -1] - logits[:, -2]) > 1e-3  # no near-tie that rounding could flip
    pred = np.argmax(np.asarray(score(v, jnp.zeros(n, jnp.int32))[0]), axis=-1)
    assert len(set(pred.tolist())) >= 3, pred
    y = np.where(right, pred, (pred + 1) % NB_KW["num_classes"]).astype(np.int32)
    for hits in score(v, jnp.asarray(y))[1]:
        np.testing.assert_array_equal(hits, right)


def test_nb201_cost():
    arch = NB.from_string("|none~0|+|none~0|none~1|+|none~0|none~1|skip_connect~2|")
    c0 = nb201_cost(NB, arch, 16, 5, 10)
    arch3 = NB.from_string("|none~0|+|none~0|none~1|+|nor_conv_3x3~0|none~1|skip_connect~2|")
    c3 = nb201_cost(NB, arch3, 16, 5, 10)
    # one 3x3 edge per cell: 5 cells x (9*16*16 + 32) params in stage 0, likewise at 32 and 64
    assert c3["params"] - c0["params"] == 5 * sum(9 * c * c + 2 * c for c in (16, 32, 64))
    assert c3["flops"] > c0["flops"]


def test_masked_batch_norm_equals_bn_of_live_channels():
    x = jax.random.normal(jax.random.key(0), (4, 3, 3, 6)) * 2 + 1
    mask = jnp.arange(6) < 4
    xm = jnp.where(mask.reshape(1, 1, 1, 6), x, 0.0)
    scale, bias = jnp.linspace(0.5, 1.5, 6), jnp.linspace(-1, 1, 6)
    mean, var = jnp.full((6,), 0.3), jnp.full((6,), 2.0)
    for train in (True, False):
        y, m, v = ops.batch_norm(xm, scale, bias, mean, var, train, mask=mask)
        y4, m4, v4 = ops.batch_norm(x[..., :4], scale[:4], bias[:4], mean[:4], var[:4], train)
        np.testing.assert_allclose(y[..., :4], y4, atol=1e-6)
        assert np.all(np.asarray(y[..., 4:]) == 0)
        np.testing.assert_allclose(m[:4], m4, atol=1e-6)
        np.testing.assert_allclose(m[4:], mean[4:])
        np.testing.assert_allclose(v[4:], var[4:])


def test_conv_custom_gradient_matches_autodiff():
    x = jax.random.normal(jax.random.key(0), (2, 5, 6, 3))
    w = jax.random.normal(jax.random.key(1), (3, 3, 3, 4))

    def ref(x, w):
        return jnp.sum(
            jnp.tanh(
                jax.lax.conv_general_dilated(
                    x, w, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
                )
            )
        )

    got = jax.grad(lambda x, w: jnp.sum(jnp.tanh(ops.conv_same(x, w))), (0, 1))(x, w)
    want = jax.grad(ref, (0, 1))(x, w)
    chex.assert_trees_all_close(got, want, atol=1e-4)


def test_pools_match_flax():
    import flax.linen as nn

    x = jax.random.normal(jax.random.key(0), (2, 5, 5, 3))
    pad = ((1, 1), (1, 1))
    np.testing.assert_allclose(ops.max_pool_same(x), nn.max_pool(x, (3, 3), padding=pad), atol=1e-6)
    np.testing.assert_allclose(ops.avg_pool_same(x), nn.avg_pool(x, (3, 3), padding=pad), atol=1e-6)
    np.testing.assert_allclose(
        ops.avg_pool_same(x, count_include_pad=False),
        nn.avg_pool(x, (3, 3), padding=pad, count_include_pad=False),
        atol=1e-6,
    )
    np.testing.assert_allclose(
        ops.max_pool_2x2(x), nn.max_pool(x, (2, 2), strides=(2, 2)), atol=1e-6
    )


def test_make_child_rejects_mismatched_space():
    with pytest.raises(ValueError, match="input"):
        make_child(SequentialSpace(), (28, 28, 1), 10)
    for retired in ("fast", "exact", "kernel"):
        with pytest.raises(ValueError, match="conv_impl"):
            make_child(SequentialSpace(), (8, 8, 1), 10, conv_impl=retired)


def test_geometry_channel_block():
    """The blocked conv's block divides every width and is at least MIN_BLOCK; spaces whose
    widths share no such block run each conv as one block of the max width."""
    from gannas_jax.child.sequential.geometry import MIN_BLOCK, geometry

    assert geometry(SequentialSpace()).block == 8  # widths 8, 16, 32
    assert geometry(SEQ4).block == 4 and geometry(SEQ4).cm == 8
    assert geometry(SEQ).block == geometry(SEQ).cm == 4  # widths 2, 3, 4: gcd 1 < MIN_BLOCK
    assert MIN_BLOCK == 4
