"""The PyTorch sides of ``bench_torch.py gan``: the original loop, and the faster versions of the
same algorithm a PyTorch expert would write.

Every variant runs the algorithm of ``bench_torch_gan``'s docstring with the same math per step:
the generator forward on 64 noise rows, one discriminator update on 64 real and 64 detached fake
rows, one generator update through the updated discriminator, Adam on both. What differs is how:

- ``original``: the faithful port (:class:`TorchGan`): a final sigmoid and ``BCELoss``, two
  discriminator forwards for its loss, ``randn``/``randint`` every step from the global RNG,
  default Adam (a for-loop on CPU), the generator loss backpropagated into the discriminator's
  weights too (gradients later zeroed).
- ``eager`` (:class:`EagerGan`): logits and ``BCEWithLogitsLoss``, one discriminator forward
  over ``[real; fake.detach()]``, the generator's gradient by ``torch.autograd.grad`` wrt its own
  weights only, noise and real indices drawn for 100 steps at once, ``zero_grad(set_to_none)``,
  fused Adam. ``eager-foreach`` (not run by default) is the same with ``foreach=True`` Adam. On
  the 2-core bench machine (nb201, 1 thread, medians of 6 x 500 steps of CPU time at load 2-4, so
  +-15%): fused 590 steps/s, foreach 430, for-loop 390; fused with ``requires_grad_(False)`` on
  the discriminator during the generator step instead of ``autograd.grad``: 520.
- ``compile`` (:class:`CompiledGan`): the whole step (forward, backward, both Adam updates) as
  one ``torch.compile(fullgraph=True, dynamic=False)`` graph, 4 steps per call, with
  ``torch._inductor.config.cpp_wrapper``. The step is pure functions of tensor lists:
  ``torch.func.vjp`` of the generator, ``grad_and_value`` of the two losses (the design of
  ``gannas_jax.gan.step``) and Adam written out (``torch.optim.Adam``'s update; its bias
  corrections computed on the host per block of steps, as ``torch.optim.Adam`` does per step).
  ``compile-max-autotune`` is the same in ``mode="max-autotune-no-cudagraphs"``;
  ``compile-cudagraphs`` (CUDA only) in ``mode="reduce-overhead"``.

What was tried for ``compile`` (same measurement as above; tuned eager ~600, original ~450):

1. ``torch.compile`` of the two modules and of ``opt.step`` (the docs' compiled optimizer),
   eager backward: ~250 steps/s, slower than the original.
2. ``torch.compile`` of the whole eager step (``backward`` and ``opt.step`` inside): graph
   breaks at ``zero_grad``/``backward``, then "RuntimeError: Trying to backward through the graph
   a second time" (the generator's forward is in the region the discriminator's backward frees);
   the same with ``torch._dynamo.config.compiled_autograd = True``.
3. Functional step (``functional_call`` on the modules, ``torch.func``, Adam written out),
   ``fullgraph=True, dynamic=False``: 750; with ``cpp_wrapper``: 950.
4. Adam's bias corrections ``b ** t`` in the graph are recomputed per element inside the fused
   Adam kernels (112 us per step for the generator's first layer); computed on the host: 1120.
5. Each network's parameters as one flat buffer (one Adam kernel per network): worse, the
   gradient's ``slice_backward`` became a 550 us masked kernel.
6. Pure functions of tensor lists instead of ``functional_call`` on modules (fewer guards:
   dynamo's cache lookup took 80-250 us per call): 1270 with the Python wrapper, 1500 with
   ``cpp_wrapper`` (kept).
7. ``torch.compiler.set_stance(skip_guard_eval_unsafe=True)``: 1650 at one step per call, no gain
   at four (1920 against 2020-2140); not used (unsafe).
8. Steps per compiled call (a Python loop traced into one graph): 2: 1720, 4: 2020-2140 (kept),
   5: 1590, 10: 1890 (81 s compile), 25: 1540 (238 s compile).
9. ``mode="max-autotune-no-cudagraphs"``: no faster (1250 against 1120 at setup 4). Inductor's
   CPU GEMM template needs constant weights (``require_constant_mat2``), so the 14 matmuls stay
   MKL calls; at these sizes they are ~0.5 ms of a step (20-30 GFLOP/s at the one-hot width 30).
"""

from __future__ import annotations

import contextlib
import types

Z_DIM, HIDDEN, BATCH, LR, BETAS, EPS = 100, 256, 64, 2e-4, (0.5, 0.999), 1e-8
BLOCK = 100  # steps whose noise and real indices ``eager`` and ``compile`` draw at once
UNROLL = 4  # steps per compiled call

DEFAULT_VARIANTS = ("original", "eager", "compile", "compile-max-autotune")
CUDA_VARIANTS = ("compile-cudagraphs",)
VARIANTS = DEFAULT_VARIANTS + ("eager-foreach",) + CUDA_VARIANTS
COMPILE_MODES = {
    "compile": None,
    "compile-max-autotune": "max-autotune-no-cudagraphs",
    "compile-cudagraphs": "reduce-overhead",
}


def one_line(exc: BaseException) -> str:
    """The exception's message in one line (with the next line where the first ends in ':',
    as torch.compile's "backend='inductor' raised:" does)."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    msg = lines[0] if lines else ""
    if msg.endswith(":") and len(lines) > 1:
        msg += " " + lines[1]
    return f"{type(exc).__name__}: {msg}"[:300]


def _sync(torch, device):
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


def _networks(nn, z_dim, hidden, n, device, d_sigmoid):
    """The sketch's generator ``z -> hidden (ReLU) -> n (sigmoid)`` and discriminator
    ``n -> hidden (LeakyReLU 0.2) -> 1`` (with a final sigmoid if ``d_sigmoid``), in the order
    ``torch.manual_seed`` draws their weights."""
    gen = nn.Sequential(nn.Linear(z_dim, hidden), nn.ReLU(), nn.Linear(hidden, n), nn.Sigmoid())
    disc = [nn.Linear(n, hidden), nn.LeakyReLU(0.2), nn.Linear(hidden, 1)]
    disc = nn.Sequential(*disc, *([nn.Sigmoid()] if d_sigmoid else []))
    return gen.to(device), disc.to(device)


class TorchGan:
    """The original PyTorch GAN loop, ported faithfully (sizes as in the module docstring)."""

    def __init__(
        self, real_onehot, z_dim=100, hidden=256, batch_size=64, lr=2e-4, seed=0, device="cpu"
    ):
        import torch
        from torch import nn

        torch.manual_seed(seed)
        self.torch, self.device = torch, device
        self.generator, self.discriminator = _networks(
            nn, z_dim, hidden, real_onehot.shape[1], device, d_sigmoid=True
        )
        self.opt_g = torch.optim.Adam(self.generator.parameters(), lr=lr, betas=(0.5, 0.999))
        self.opt_d = torch.optim.Adam(self.discriminator.parameters(), lr=lr, betas=(0.5, 0.999))
        self.criterion = nn.BCELoss()
        self.real = torch.tensor(real_onehot.tolist(), dtype=torch.float32, device=device)
        self.z_dim, self.batch_size = z_dim, batch_size
        self.ones = torch.ones(batch_size, 1, device=device)
        self.zeros = torch.zeros(batch_size, 1, device=device)

    def step(self):
        torch, b, dev = self.torch, self.batch_size, self.device
        real = self.real[torch.randint(0, self.real.shape[0], (b,), device=dev)]
        fake = self.generator(torch.randn(b, self.z_dim, device=dev))
        # Discriminator: real -> 1, detached fake -> 0.
        self.opt_d.zero_grad()
        d_loss = self.criterion(self.discriminator(real), self.ones) + self.criterion(
            self.discriminator(fake.detach()), self.zeros
        )
        d_loss.backward()
        self.opt_d.step()
        # Generator: fool the updated discriminator.
        self.opt_g.zero_grad()
        g_loss = self.criterion(self.discriminator(fake), self.ones)
        g_loss.backward()
        self.opt_g.step()
        return d_loss, g_loss

    def run(self, num_steps):
        for _ in range(num_steps):
            d_loss, g_loss = self.step()
        return float(d_loss.detach()), float(g_loss.detach())


class _Blocks:
    """Initial weights (as :class:`TorchGan`'s, from ``torch.manual_seed(seed)``) and the noise
    and real batches of ``BLOCK`` steps at a time from a private generator: ``eager`` and
    ``compile`` draw the same batches."""

    def __init__(self, real_onehot, seed, device):
        import torch
        from torch import nn

        torch.manual_seed(seed)
        self.torch, self.device = torch, device
        # Logits: the sigmoid is in the loss.
        self.generator, self.discriminator = _networks(
            nn, Z_DIM, HIDDEN, real_onehot.shape[1], device, d_sigmoid=False
        )
        self.real = torch.tensor(real_onehot.tolist(), dtype=torch.float32, device=device)
        self.rng = torch.Generator(device=device).manual_seed(seed)
        self.t, self.i = 0, BLOCK

    def draw(self):
        """The next ``BLOCK`` steps' noise ``[K, B, Z]``, real rows ``[K, B, N]`` and Adam
        factors ``[K, 2]``: ``lr / (1 - b1^t)`` and ``1 / sqrt(1 - b2^t)`` of steps t."""
        torch, dev = self.torch, self.device
        zs = torch.randn(BLOCK, BATCH, Z_DIM, generator=self.rng, device=dev)
        idx = torch.randint(0, self.real.shape[0], (BLOCK, BATCH), generator=self.rng, device=dev)
        t = torch.arange(self.t + 1, self.t + BLOCK + 1, dtype=torch.float64)
        adam = torch.stack([LR / (1 - BETAS[0] ** t), (1 - BETAS[1] ** t).rsqrt()], 1)
        self.t += BLOCK
        self.i = 0
        return zs, self.real[idx], adam.to(dev, torch.float32)


class EagerGan(_Blocks):
    """The tuned eager loop (``eager``; ``optimizer="foreach"``: ``eager-foreach``)."""

    def __init__(self, real_onehot, seed=0, device="cpu", optimizer="fused"):
        super().__init__(real_onehot, seed, device)
        torch, b = self.torch, BATCH
        kw = {"fused": True} if optimizer == "fused" else {"foreach": True}
        self.g_params = list(self.generator.parameters())
        adam = dict(lr=LR, betas=BETAS, eps=EPS, **kw)
        self.opt_g = torch.optim.Adam(self.g_params, **adam)
        self.opt_d = torch.optim.Adam(self.discriminator.parameters(), **adam)
        self.criterion = torch.nn.BCEWithLogitsLoss()
        self.d_target = torch.cat([torch.ones(b, 1), torch.zeros(b, 1)]).to(device)
        self.g_target = torch.ones(b, 1, device=device)
        self.setup = f"{optimizer} Adam, autograd.grad, one D forward, draws per {BLOCK} steps"

    def run(self, num_steps):
        gen, disc, crit = self.generator, self.discriminator, self.criterion
        for _ in range(num_steps):
            if self.i == BLOCK:
                self.zs, self.reals, _ = self.draw()
            z, real = self.zs[self.i], self.reals[self.i]
            self.i += 1
            fake = gen(z)
            # Twice the mean over 2B rows: the original's sum of the real and fake means.
            d_loss = 2 * crit(disc(self.torch.cat([real, fake.detach()])), self.d_target)
            self.opt_d.zero_grad(set_to_none=True)
            d_loss.backward()
            self.opt_d.step()
            g_loss = crit(disc(fake), self.g_target)
            grads = self.torch.autograd.grad(g_loss, self.g_params)
            for p, g in zip(self.g_params, grads, strict=True):
                p.grad = g
            self.opt_g.step()
        return float(d_loss.detach()), float(g_loss.detach())


# --- The compiled step: pure functions of tensor lists ---


def _gen(torch, p, z):
    f = torch.nn.functional
    return torch.sigmoid(f.linear(torch.relu(f.linear(z, p[0], p[1])), p[2], p[3]))


def _disc(torch, p, x):
    f = torch.nn.functional
    return f.linear(f.leaky_relu(f.linear(x, p[0], p[1]), 0.2), p[2], p[3])


def _adam(params, grads, ms, vs, factors):
    """``torch.optim.Adam``'s update in place; ``factors``: ``lr / bc1``, ``1 / sqrt(bc2)``."""
    b1, b2 = BETAS
    for p, g, m, v in zip(params, grads, ms, vs, strict=True):
        m.lerp_(g, 1 - b1)
        v.mul_(b2).addcmul_(g, g, value=1 - b2)
        p.sub_(factors[0] * m / (v.sqrt() * factors[1] + EPS))


def _one_step(g_p, d_p, g_m, g_v, d_m, d_v, z, real, factors):
    import torch
    from torch.func import grad_and_value, vjp

    bce = torch.nn.functional.binary_cross_entropy_with_logits
    b = z.shape[0]
    fake, g_vjp = vjp(lambda p: _gen(torch, p, z), g_p)
    ones, zeros = torch.ones(b, 1, device=z.device), torch.zeros(b, 1, device=z.device)
    target = torch.cat([ones, zeros])

    def d_objective(p):  # fake is a constant here: detached, as in the original
        return 2 * bce(_disc(torch, p, torch.cat([real, fake])), target)

    d_grads, d_loss = grad_and_value(d_objective)(d_p)
    _adam(d_p, d_grads, d_m, d_v, factors)
    d_fake, g_loss = grad_and_value(lambda f: bce(_disc(torch, d_p, f), ones))(fake)
    (g_grads,) = g_vjp(d_fake)
    _adam(g_p, g_grads, g_m, g_v, factors)
    return d_loss, g_loss


def _steps(g_p, d_p, g_m, g_v, d_m, d_v, zs, reals, factors):
    for j in range(zs.shape[0]):  # unrolled into the graph
        out = _one_step(g_p, d_p, g_m, g_v, d_m, d_v, zs[j], reals[j], factors[j])
    return out


class CompiledGan(_Blocks):
    """``torch.compile`` of :func:`_steps` (``compile``, ``compile-max-autotune``,
    ``compile-cudagraphs``); compiled on the first :meth:`run`, at the current thread count."""

    def __init__(self, real_onehot, seed=0, device="cpu", mode=None, cpp_wrapper=True):
        super().__init__(real_onehot, seed, device)
        torch = self.torch
        g_p = [p.detach().clone() for p in self.generator.parameters()]
        d_p = [p.detach().clone() for p in self.discriminator.parameters()]
        g_m, g_v, d_m, d_v = ([torch.zeros_like(p) for p in ps] for ps in (g_p, g_p, d_p, d_p))
        self.state = (g_p, d_p, g_m, g_v, d_m, d_v)
        self.mode, self.cpp_wrapper = mode, cpp_wrapper
        self.cudagraphs = mode == "reduce-overhead"
        if self.cudagraphs:  # mutated inputs must be static for CUDA graphs
            for ts in self.state:
                for t in ts:
                    torch._dynamo.mark_static_address(t)
        # A fresh code object: dynamo caches compiled code per code object and does not guard
        # on the thread count the C++ kernels were compiled for, so each instance compiles anew.
        fn = types.FunctionType(_steps.__code__.replace(), _steps.__globals__, "_steps")
        self.fn = torch.compile(fn, fullgraph=True, dynamic=False, mode=mode)
        self.compile_s = None
        self.setup = ", ".join(
            [f"mode={mode or 'default'}", "fullgraph", f"{UNROLL} steps/call"]
            + (["cpp_wrapper"] if cpp_wrapper else [])
        )

    def _call(self):
        if self.i == BLOCK:
            self.zs, self.reals, self.factors = self.draw()
        i, j = self.i, self.i + UNROLL
        if self.cudagraphs:
            self.torch.compiler.cudagraph_mark_step_begin()
        self.i = j
        return self.fn(*self.state, self.zs[i:j], self.reals[i:j], self.factors[i:j])

    def run(self, num_steps):
        if num_steps % UNROLL:
            raise ValueError(f"compiled variants run multiples of {UNROLL} steps")
        calls = num_steps // UNROLL
        if self.compile_s is None:  # compile: the first call, timed apart
            import time

            patch = self.torch._inductor.config.patch(cpp_wrapper=True)
            t0 = time.perf_counter()
            with patch if self.cpp_wrapper else contextlib.nullcontext():
                d_loss, g_loss = self._call()
            _sync(self.torch, self.device)
            self.compile_s = time.perf_counter() - t0
            calls -= 1
        for _ in range(calls):
            d_loss, g_loss = self._call()
        return float(d_loss), float(g_loss)


def make(variant, real_onehot, seed, device):
    """A fresh instance of ``variant`` (its compile happens on the first ``run``)."""
    if variant == "original":
        return TorchGan(real_onehot, seed=seed, device=device)
    if variant.startswith("eager"):
        opt = "foreach" if variant == "eager-foreach" else "fused"
        return EagerGan(real_onehot, seed=seed, device=device, optimizer=opt)
    return CompiledGan(real_onehot, seed=seed, device=device, mode=COMPILE_MODES[variant])


def warm(variant, real_onehot, seed, device, steps):
    """``make`` and ``steps`` untimed steps (compiling); where a compile with ``cpp_wrapper``
    fails, retried without it. Returns ``(instance, (d_loss, g_loss))``; raises what the
    variant raised."""
    gan = make(variant, real_onehot, seed, device)
    try:
        return gan, gan.run(steps)
    except Exception as exc:
        if not (isinstance(gan, CompiledGan) and gan.cpp_wrapper):
            raise
        first = one_line(exc)
    gan = CompiledGan(real_onehot, seed, device, COMPILE_MODES[variant], cpp_wrapper=False)
    gan.setup += f" (cpp_wrapper failed: {first})"
    return gan, gan.run(steps)


def _close(a, b):
    """Loose agreement of two (d_loss, g_loss) pairs (the sanity check, not an equality test)."""
    return all(abs(x - y) <= 0.05 + 0.05 * abs(y) for x, y in zip(a, b, strict=True))


def warm_all(args, onehot, dense, thread_counts):
    """Builds and warms each of ``args.variants`` at each thread count (compiling the compiled
    ones). Returns ``(sides, info)``: ``sides`` maps ``"VARIANT/Tt"`` to ``(run, variant)``,
    ``info`` each variant to its setup, error, compile seconds and losses after the warm-up."""
    import torch
    from bench_common import log

    def at_threads(gan, threads):
        def go(num_steps):
            torch.set_num_threads(threads)
            return gan.run(num_steps)

        return go

    sides, info = {}, {}
    wanted = list(args.variants)
    if "original" in wanted and dense.shape[1] != onehot.shape[1]:
        wanted.append("original-dense")
    for v in wanted:
        rec = info[v] = {"setup": "", "error": None, "compile_s": {}, "losses_after_warmup": {}}
        gan, mine = None, {}
        for t in thread_counts:
            torch.set_num_threads(t)
            try:
                if gan is None or v in COMPILE_MODES:  # compiled: one instance per count
                    real, name = (dense, "original") if v == "original-dense" else (onehot, v)
                    gan, losses = warm(name, real, args.seed, args.device, args.warmup_steps)
                    rec["losses_after_warmup"][f"{t}t"] = losses
                    if isinstance(gan, CompiledGan):
                        rec["compile_s"][f"{t}t"] = gan.compile_s
                    rec["setup"] = getattr(gan, "setup", "faithful port")
            except Exception as exc:  # a failing variant gets a row saying why
                rec["error"] = one_line(exc)
                log(f"  {v} ({t} threads) failed: {rec['error']}")
                mine = {}
                break
            mine[f"{v}/{t}t"] = (at_threads(gan, t), v)
        sides.update(mine)
        if not rec["error"]:
            log(
                f"  {v}: warmed ({rec['setup']}); losses after {args.warmup_steps} steps "
                f"{rec['losses_after_warmup']}; compile s {rec['compile_s']}"
            )
    ref = (info.get("eager") or info.get("eager-foreach") or {}).get("losses_after_warmup")
    for v, rec in info.items():
        if v in COMPILE_MODES and ref and not rec["error"]:
            ref_losses = next(iter(ref.values()))
            ok = all(_close(x, ref_losses) for x in rec["losses_after_warmup"].values())
            rec["loss_check_vs_eager"] = "ok" if ok else "differs"
            if not ok:
                log(
                    f"  WARNING: {v}'s losses {rec['losses_after_warmup']} differ from "
                    f"eager's {ref_losses} after the same steps from the same start"
                )
    return sides, info
