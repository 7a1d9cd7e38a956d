"""The PyTorch side of ``bench_torch.py child``: exact-size models, their training, and a pool of
worker processes that trains a population in longest-job-first order.

How the baseline is built, and why:

* **Processes, not threads.** The children are tiny (8x8 digits, batch 32), so a training step is
  bound by per-op dispatch, not arithmetic: more intra-op threads add OpenMP barriers, not speed.
  A machine's cores are used instead by ``W`` worker processes with one torch thread each, each
  training whole architectures, as JAX spreads the population over one XLA device per core.
* **Spawn.** Workers are started with the ``spawn`` context: the parent has JAX (its XLA thread
  pools) loaded, and ``fork`` would copy a process whose threads are mid-flight, a known way to
  deadlock OpenMP and XLA; ``forkserver`` would only save start-up time, which is outside the clock.
  A spawned worker is a clean interpreter that imports torch and numpy, never JAX.
* **Ready before the clock.** Each worker imports torch, sets one thread, and converts the data
  (the recipe's batches in the recipe's order, gathered once, and the evaluation images) before it
  says it is ready; the parent starts the clock once all are, then deals out the jobs, and stops it
  when the last result is back. Model builds, weight loading and all first-use costs of training
  (oneDNN primitives, the autograd engine, the first optimizer step) are inside the clock.
* **LPT by a dynamic queue.** Jobs are queued costliest first and each idle worker takes the next
  one, so each job goes to the worker that frees up first: longest-processing-time list scheduling
  with measured, not predicted, loads. The cost of a job, :func:`step_cost`, is the exact-size
  conv and dense multiply-adds of a training step plus a per-layer and a per-conv overhead in
  multiply-add equivalents: MACs alone rank a no-conv child as nearly free, while its ~10 ops cost
  about half of a conv child's step here (see ``LAYER_MACS``).
* **Step.** Channels-last tensors (PyTorch's NCHW CPU pooling kernels are up to 10x slower on
  these shapes; over seed 0's population channels-last took ~8% less time, and its flatten is
  JAX's (h, w, c) order, so it needs no copy), integer ``same`` padding,
  ``torch.optim.Adam(fused=True)`` (over that population ~25% less time than ``foreach=True``,
  which was a few % faster than the default for-loop), ``zero_grad`` to None, and validation and
  test scored by one forward under ``inference_mode``. ``torch.compile`` is left out: compiling
  each new architecture costs far more than training it for 300 steps.
"""

from __future__ import annotations

import queue
import time
import traceback

import numpy as np

# Cost model of :func:`step_cost`, in multiply-add equivalents: a least-squares fit of the
# per-step times of seed 0's 16 architectures (torch 2.13 CPU, 1 thread, this bench's recipe) to
# ``a + b * layers + c * convs + MACs / rate`` gave a per-layer cost of ~1.3M MACs and a per-conv
# one of ~12M (the conv's fixed oneDNN cost, forward and backward); correlation 0.98 with the
# measured times, against 0.88 for MACs alone.
LAYER_MACS = 1.3e6
CONV_MACS = 12e6


def step_cost(spec: dict, batch_size: int) -> float:
    """Estimated cost of one training step of the architecture ``spec`` (``space.to_spec``): the
    exact-size conv and dense multiply-adds of forward and backward (3x the forward's, for a
    batch), plus ``LAYER_MACS`` per layer and ``CONV_MACS`` per conv."""
    h, w, c = spec["input_shape"]
    macs, layers, convs = 0, 0, 0
    for s, stage in enumerate(spec["stages"]):
        if s:
            h, w, layers = h // 2, w // 2, layers + 1
        for layer in stage:
            layers += 1
            if layer["type"] == "conv":
                macs += h * w * layer["kernel"] ** 2 * c * layer["channels"]
                c, convs = layer["channels"], convs + 1
    d = h * w * c
    for units in [layer["units"] for layer in spec["head"]] + [spec["num_classes"]]:
        macs, d, layers = macs + d * units, units, layers + 2  # a dense and its activation
    return 3.0 * batch_size * macs + LAYER_MACS * layers + CONV_MACS * convs


def lpt_order(costs) -> list[int]:
    """Job indices costliest first (ties keep their order)."""
    return sorted(range(len(costs)), key=lambda i: -costs[i])


def build_model(torch, spec: dict, static: dict):
    """Exact-size network of ``spec`` holding the static (JAX layout) weights ``static``, as a
    ``Sequential(features, head)``: :func:`forward` flattens between them in (h, w, c) order,
    JAX's, which is the memory order of a channels-last tensor."""
    nn = torch.nn
    acts = {"relu": nn.ReLU, "sigmoid": nn.Sigmoid, "tanh": nn.Tanh}

    def param(a):  # a copy: training must not write into the static weights
        return nn.Parameter(torch.from_numpy(np.array(a, np.float32, order="C")))

    features: list = []
    h, w, c = spec["input_shape"]
    for s, stage in enumerate(spec["stages"]):
        if s:
            features.append(nn.MaxPool2d(2, 2))
            h, w = h // 2, w // 2
        for j, layer in enumerate(stage):
            if layer["type"] == "conv":
                k, out = layer["kernel"], layer["channels"]
                conv = nn.Conv2d(c, out, k, padding=k // 2)  # odd k: "same"
                sp = static[f"conv{s}_{j}"]
                conv.weight = param(np.transpose(sp["kernel"], (3, 2, 0, 1)))  # HWIO -> OIHW
                conv.bias = param(sp["bias"])
                features.append(conv)
                c = out
            elif layer["type"] == "pool":
                features.append(
                    nn.MaxPool2d(3, 1, 1)
                    if layer["kind"] == "max"
                    else nn.AvgPool2d(3, 1, 1, count_include_pad=True)
                )
            else:
                features.append(acts[layer["fn"]]())
    head: list = []
    d = h * w * c
    names = [f"fc{f}" for f in range(len(spec["head"]))] + ["out"]
    units = [layer["units"] for layer in spec["head"]] + [spec["num_classes"]]
    for i, (name, u) in enumerate(zip(names, units, strict=True)):
        dense = nn.Linear(d, u)
        dense.weight = param(np.asarray(static[name]["kernel"]).T)
        dense.bias = param(static[name]["bias"])
        head.append(dense)
        if i < len(spec["head"]):
            head.append(acts[spec["head"][i]["activation"]]())
        d = u
    return nn.Sequential(nn.Sequential(*features), nn.Sequential(*head))


def forward(features, head, x):
    return head(features(x).permute(0, 2, 3, 1).flatten(1))


def prepare(torch, payload: dict, device: str) -> dict:
    """The worker's data, before the clock: the recipe's batches in its order, gathered once, and
    the validation and test images as one channels-last batch."""
    dev = torch.device(device)
    if dev.type == "cuda":
        torch.cuda.init()

    def images(x):  # NHWC numpy -> NCHW-shaped, channels-last tensor
        t = torch.from_numpy(np.ascontiguousarray(x)).permute(0, 3, 1, 2)
        return t.to(dev).contiguous(memory_format=torch.channels_last)

    x_tr, y_tr, idx = payload["x_train"], payload["y_train"].astype(np.int64), payload["idx"]
    return {
        "device": dev,
        "batches": [(images(x_tr[b]), torch.from_numpy(y_tr[b]).to(dev)) for b in idx],
        "x_eval": images(np.concatenate([payload["x_val"], payload["x_test"]])),
        "y_val": payload["y_val"],
        "y_test": payload["y_test"],
        "lr": payload["learning_rate"],
        "specs": payload["specs"],
        "statics": payload["statics"],
    }


def train_one(torch, state: dict, i: int) -> tuple[float, float]:
    """Builds architecture ``i`` and trains it with the recipe; returns (val %, test %)."""
    cross_entropy = torch.nn.functional.cross_entropy
    model = build_model(torch, state["specs"][i], state["statics"][i])
    model = model.to(state["device"], memory_format=torch.channels_last)
    opt = torch.optim.Adam(model.parameters(), lr=state["lr"], fused=True)
    features, head = model
    for x, y in state["batches"]:
        loss = cross_entropy(forward(features, head, x), y)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    with torch.inference_mode():
        pred = forward(features, head, state["x_eval"]).argmax(1).cpu().numpy()
    if state["device"].type == "cuda":
        torch.cuda.synchronize()  # (cpu() synchronized already; explicit for the clock)
    n_val = len(state["y_val"])
    return (
        100.0 * float(np.mean(pred[:n_val] == state["y_val"])),
        100.0 * float(np.mean(pred[n_val:] == state["y_test"])),
    )


def _worker(rank, payload, device, threads, jobs, results) -> None:
    """A pool worker: set up, say ready, then train job indices from ``jobs`` until None."""
    try:
        import torch

        torch.set_num_threads(threads)
        # The first torch.optim optimizer imports torch._dynamo (~2.5 s here): an import, so
        # before the clock like ``import torch``.
        import torch._dynamo  # noqa: F401

        state = prepare(torch, payload, device)
        results.put(("ready", rank, torch.__version__, torch.get_num_threads()))
        while (i := jobs.get()) is not None:
            t0, c0 = time.perf_counter(), time.thread_time()
            val, test = train_one(torch, state, i)
            t1, c1 = time.perf_counter(), time.thread_time()
            results.put(("done", rank, i, val, test, t1 - t0, c1 - c0))
    except BaseException:
        results.put(("error", rank, traceback.format_exc()))


def _get(results, procs):
    """The next message from the workers; raises if one failed or died."""
    while True:
        try:
            msg = results.get(timeout=1.0)
        except queue.Empty:
            dead = [p.exitcode for p in procs if not p.is_alive()]
            if dead:
                raise RuntimeError(f"a torch worker died (exit codes {dead})") from None
            continue
        if msg[0] == "error":
            raise RuntimeError(f"torch worker {msg[1]} failed:\n{msg[2]}")
        return msg


def run_pool(
    payload: dict, costs, workers: int, device: str = "cpu", threads: int = 1, passes: int = 2
) -> dict:
    """Trains every architecture of ``payload`` ``passes`` times on ``workers`` fresh spawned
    processes, jobs dealt costliest first (``costs``) to whichever worker is free.

    Returns ``seconds`` (wall time of each pass, from the last worker's ready signal to the last
    result); of the first pass, per architecture ``val``, ``test``, ``job_s``, ``job_cpu_s`` and
    ``worker``, and per worker ``busy_s`` and ``busy_cpu_s``; ``passes_agree`` (whether later
    passes reproduced the accuracies), the LPT ``order``, and the workers' torch ``version`` and
    ``threads``.
    """
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    jobs, results = ctx.Queue(), ctx.Queue()
    procs = [
        ctx.Process(target=_worker, args=(r, payload, device, threads, jobs, results), daemon=True)
        for r in range(workers)
    ]
    for p in procs:
        p.start()
    try:
        info = [_get(results, procs) for _ in procs]  # every worker's ("ready", ...)
        order, n = lpt_order(costs), len(costs)
        seconds, firsts, agree = [], None, True
        for _ in range(passes):
            out: dict[int, tuple] = {}
            t0 = time.perf_counter()
            for i in order:
                jobs.put(i)
            while len(out) < n:
                _, rank, i, val, test, job_s, cpu_s = _get(results, procs)
                out[i] = (val, test, job_s, rank, cpu_s)
            seconds.append(time.perf_counter() - t0)
            if firsts is None:
                firsts = out
            else:
                agree &= all(out[i][:2] == firsts[i][:2] for i in range(n))
        for _ in procs:
            jobs.put(None)
        for p in procs:
            p.join(timeout=30)
    finally:
        for p in procs:
            if p.is_alive():
                p.terminate()
    col = list(zip(*(firsts[i] for i in range(n)), strict=True))

    def per_worker(col_s):
        return [
            sum(s for s, r in zip(col_s, col[3], strict=True) if r == w) for w in range(workers)
        ]

    busy, busy_cpu = per_worker(col[2]), per_worker(col[4])
    return {
        "seconds": seconds,
        "val": list(col[0]),
        "test": list(col[1]),
        "job_s": list(col[2]),
        "worker": list(col[3]),
        "job_cpu_s": list(col[4]),  # the job's CPU time: below job_s when the cores are shared
        "busy_s": busy,
        "busy_cpu_s": busy_cpu,
        "passes_agree": agree,
        "order": order,
        "version": info[0][2],
        "threads": info[0][3],
    }
