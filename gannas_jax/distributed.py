"""Multi-process runs on JAX's own multi-controller runtime (``jax.distributed``).

One process per host (or several on one host), all running the same search with the same keys:
:func:`initialize` connects them, the :class:`~gannas_jax.TrainingEvaluator` spreads each
population over the global device mesh (every process trains its share on its local devices),
:func:`allgather` brings the scores back to every process, and only the primary process
(:func:`is_primary`) writes files. A watchdog thread turns the loss of a peer into a one-line
message and a non-zero exit instead of a hang (:class:`PeerLostError`).

On CPU the collectives run on gloo (``jax_cpu_collectives_implementation``); on GPU and TPU on
the backend's own.
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import logging
import os
import socket
import sys
import threading
import time

import jax
import numpy as np

# Environment variables that say a scheduler started several processes of one job; with any of
# them set and no explicit settings, jax.distributed.initialize() detects the rest itself.
_CLUSTERS = {"SLURM": "SLURM_STEP_NUM_TASKS", "Open MPI": "OMPI_COMM_WORLD_SIZE"}  # srun, mpirun


class PeerLostError(RuntimeError):
    """Another process of a multi-process run died: the run cannot go on (rerun all to resume)."""


def detect_cluster() -> str | None:
    """The scheduler that started this process as one of several (``'SLURM'``, ``'Open MPI'``,
    ``'Cloud TPU'``), or None when it runs alone."""
    for name, count in _CLUSTERS.items():
        if os.environ.get(count, "").strip().isdigit() and int(os.environ[count]) > 1:
            return name
    if "," in os.environ.get("TPU_WORKER_HOSTNAMES", ""):  # a multi-host Cloud TPU slice
        return "Cloud TPU"
    return None


def _split_address(address: str) -> tuple[str, int]:
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"coordinator address must be HOST:PORT, got {address!r}")
    return host.strip("[]"), int(port)


def _check_coordinator(address: str, process_id: int, timeout_s: float) -> None:
    """Fails in one line where JAX would abort the process: process 0 must be able to bind the
    port, and the others must reach it within ``timeout_s``."""
    host, port = _split_address(address)
    if process_id == 0:
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind(("", port))
            except OSError as err:
                raise ValueError(f"coordinator port {port} cannot be bound here: {err}") from None
        return
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with socket.create_connection((host, port), timeout=2):
                return
        except OSError as err:
            if time.monotonic() > deadline:
                raise ValueError(
                    f"coordinator {address} is unreachable after {timeout_s:g} s ({err}); "
                    "start process 0 first, or check the address"
                ) from None
            time.sleep(0.2)


def initialize(
    coordinator: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    *,
    init_timeout_s: int = 120,
    heartbeat_timeout_s: int = 60,
    watchdog: bool = True,
) -> bool:
    """Connects this process to the others of a multi-process run, or leaves it alone.

    Call it before JAX computes anything (``scripts/search.py`` does, from its flags). With
    ``coordinator``, ``num_processes`` and ``process_id`` all given, those are used; with none
    given, JAX's own detection runs when a SLURM, Open MPI or Cloud TPU multi-host job is seen,
    and otherwise this is a single-process run and nothing is called.

    Args:
      coordinator: ``HOST:PORT`` of process 0, which serves the coordination service there.
      num_processes: processes in the run; 1 is a single-process run.
      process_id: this process's index, ``0 <= process_id < num_processes``.
      init_timeout_s: how long to wait for every process to connect.
      heartbeat_timeout_s: how long a silent peer is waited for before it counts as lost.
      watchdog: start the thread that ends this process, with a message naming the lost peer,
        when another one dies (:func:`start_watchdog`).

    Returns:
      Whether the process is part of a multi-process run.

    Raises:
      ValueError: incomplete or inconsistent settings, a port that cannot be bound, or a
        coordinator that cannot be reached.
    """
    given = [v is not None for v in (coordinator, num_processes, process_id)]
    if any(given) and not all(given):
        raise ValueError(
            "distributed settings: give all of coordinator, num_processes and process_id, "
            "or none (to detect SLURM, Open MPI or Cloud TPU)"
        )
    if jax.distributed.is_initialized():
        return jax.process_count() > 1
    if not any(given):
        cluster = detect_cluster()
        if cluster is None:
            return False
        _prepare()
        jax.distributed.initialize(
            initialization_timeout=init_timeout_s, heartbeat_timeout_seconds=heartbeat_timeout_s
        )
    else:
        for name, v in (("num_processes", num_processes), ("process_id", process_id)):
            if not isinstance(v, (int, np.integer)) or isinstance(v, bool):
                raise ValueError(f"{name} must be an integer, got {v!r}")
        if num_processes < 1:
            raise ValueError(f"num_processes must be >= 1, got {num_processes}")
        if not 0 <= process_id < num_processes:
            raise ValueError(
                f"process_id must be in [0, {num_processes}) for {num_processes} processes, "
                f"got {process_id}"
            )
        if num_processes == 1:
            return False
        _check_coordinator(coordinator, int(process_id), init_timeout_s)
        _prepare()
        jax.distributed.initialize(
            coordinator_address=coordinator,
            num_processes=int(num_processes),
            process_id=int(process_id),
            initialization_timeout=init_timeout_s,
            heartbeat_timeout_seconds=heartbeat_timeout_s,
        )
    atexit.register(_leave)  # before JAX's own exit handler (atexit runs last-in first)
    if watchdog:
        start_watchdog()
        _quiet_thread_errors_of_lost_peers()
    return jax.process_count() > 1


def _prepare() -> None:
    # gloo gives XLA:CPU its cross-process collectives; recoverability keeps a process alive when
    # a peer dies, so that the watchdog can say which one (JAX would abort without a word).
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.config.update("jax_enable_recoverability", True)


def is_primary() -> bool:
    """Whether this process writes the run's files (process 0; always True alone)."""
    return jax.process_index() == 0


# Liveness lives in the coordination service's key-value store: every process's watchdog bumps
# its own beat counter each second, and a peer whose counter stops moving for STALE_S (and that
# did not say it exited) is lost. (The service's own live-node query is a collective: every live
# process must call it, so it cannot serve a watchdog.)
_BEAT = "gannas_jax/beat/"
_EXITED = "gannas_jax/exited/"
STALE_S = 5.0
# A peer killed now is seen lost within this: STALE_S after the last beat seen, plus two polls.
LOSS_SEEN_WITHIN_S = STALE_S + 3.0


def _client():
    from jax._src import distributed  # the client of jax.distributed.initialize

    return distributed.global_state.client


class _Monitor:
    """The peers' beat counters, and when each last moved (local monotonic time)."""

    def __init__(self):
        self.beats = 0
        self.seen: dict[int, tuple[str, float]] = {}
        self.service_lost = False
        self.lock = threading.Lock()

    def poll(self) -> None:
        client = _client()
        now = time.monotonic()
        try:
            self.beats += 1
            client.key_value_set(f"{_BEAT}{jax.process_index()}", str(self.beats), True)
            beats = dict(client.key_value_dir_get(_BEAT))
            exited = {k.rsplit("/", 1)[1] for k, _ in client.key_value_dir_get(_EXITED)}
        except Exception:  # the coordination service is gone with process 0
            self.service_lost = True
            return
        with self.lock:
            for p in range(jax.process_count()):
                value = "exited" if str(p) in exited else beats.get(f"{_BEAT}{p}", "")
                if self.seen.get(p, (None,))[0] != value:
                    self.seen[p] = (value, now)

    def lost(self) -> list[int]:
        if self.service_lost:
            return [0]
        now = time.monotonic()
        with self.lock:
            return [
                p
                for p, (value, since) in sorted(self.seen.items())
                if value != "exited" and p != jax.process_index() and now - since > STALE_S
            ]


_monitor: _Monitor | None = None
_watchdog: threading.Thread | None = None
_stop = threading.Event()


def lost_processes(wait_s: float = 0.0) -> list[int]:
    """The peers that stopped without exiting normally (killed, or crashed in C++), as the
    watchdog sees them; empty alone, or without a watchdog.

    Args:
      wait_s: after a failed collective, how long to wait for the watchdog to see the loss that
        caused it (a lost peer is seen ``STALE_S`` after its last beat); the first non-empty
        answer returns at once.
    """
    if _monitor is None:
        return []
    deadline = time.monotonic() + wait_s
    while True:
        lost = _monitor.lost()
        if lost or time.monotonic() >= deadline:
            return lost
        time.sleep(0.2)


def lost_message(lost: list[int]) -> str:
    n = jax.process_count()
    who = ", ".join(str(p) for p in lost)
    return (
        f"lost process {who} of {n} (killed or crashed); rerun all {n} processes with the same "
        "workdir to resume from the last checkpoint"
    )


def start_watchdog(interval_s: float = 1.0) -> None:
    """Starts a daemon thread that beats for this process and, once a peer is lost, prints
    :func:`lost_message` to stderr and ends this process with exit code 1, wherever the main
    thread is blocked (a collective waiting for the dead peer would otherwise wait for ever)."""
    global _monitor, _watchdog
    if _watchdog is not None or jax.process_count() == 1:
        return
    _monitor = _Monitor()
    _monitor.poll()

    def watch():
        while not _stop.wait(interval_s):
            _monitor.poll()
            lost = _monitor.lost()
            if lost and not _stop.is_set():
                print(f"error: {lost_message(lost)}", file=sys.stderr, flush=True)
                os._exit(1)

    _stop.clear()
    _watchdog = threading.Thread(target=watch, name="gannas-peer-watchdog", daemon=True)
    _watchdog.start()


def stop_watchdog() -> None:
    """Stops the watchdog thread (before this process leaves the run)."""
    global _watchdog
    if _watchdog is not None:
        _stop.set()
        _watchdog.join()
        _watchdog = None


def _quiet_thread_errors_of_lost_peers() -> None:
    """A background thread that fails because a peer died prints no traceback, neither through
    ``threading.excepthook`` nor as a logged exception (orbax's checkpoint threads log theirs
    through absl): the lost peer is reported once, by the watchdog or the main thread. Any other
    error is printed as before."""
    previous = threading.excepthook

    def hook(args):
        if lost_processes(wait_s=LOSS_SEEN_WITHIN_S):
            return
        previous(args)

    threading.excepthook = hook

    class _DropIfPeerLost(logging.Filter):
        def filter(self, record):
            return not (record.exc_info and lost_processes(wait_s=LOSS_SEEN_WITHIN_S))

    logging.getLogger("absl").addFilter(_DropIfPeerLost())


def _leave(timeout_s: float = 30.0) -> None:
    """A normal exit: says so, waits (up to ``timeout_s``) for the others to exit too, and
    disconnects the other processes' clients before process 0 takes the coordination service
    down with it (a client whose service is gone aborts its process at shutdown)."""
    stop_watchdog()
    with contextlib.suppress(Exception):
        client = _client()
        client.key_value_set(f"{_EXITED}{jax.process_index()}", "1", True)
        client.wait_at_barrier("gannas_jax/exit", int(timeout_s * 1000))
        if jax.process_index() != 0:
            jax.distributed.shutdown()
            return
        # Returns once every other process has disconnected (a collective of the live ones).
        client.get_live_nodes(list(range(jax.process_count())))


def allgather(tree):
    """Every process's copy of a pytree of global arrays (NumPy), or the arrays themselves
    fetched alone; a collective that fails because a peer died raises :class:`PeerLostError`."""
    if jax.process_count() == 1:
        return jax.device_get(tree)
    from jax.experimental import multihost_utils

    with _peer_errors():
        return multihost_utils.process_allgather(tree, tiled=True)


def primary_agrees(ok: bool) -> bool:
    """Process 0's ``ok`` on every process (one collective; ``ok`` itself alone): the others
    learn whether process 0 went on before they do."""
    if jax.process_count() == 1:
        return ok
    from jax.experimental import multihost_utils

    with _peer_errors():
        return bool(multihost_utils.broadcast_one_to_all(np.int32(ok)))


def agree(values: np.ndarray, what: str) -> None:
    """Raises RuntimeError unless every process holds the same ``values`` (a cheap fingerprint
    is compared, one collective)."""
    if jax.process_count() == 1:
        return
    from jax.experimental import multihost_utils

    a = np.ascontiguousarray(values)
    h = hashlib.sha256(f"{a.shape}{a.dtype}".encode() + a.tobytes()).digest()
    digest = np.frombuffer(h[:8], np.int32)
    with _peer_errors():
        every = np.asarray(multihost_utils.process_allgather(digest))
    if not np.all(every == every[0]):
        raise RuntimeError(
            f"the {jax.process_count()} processes disagree on {what}; they must run the same "
            "code, config and library versions"
        )


@contextlib.contextmanager
def _peer_errors():
    try:
        yield
    except Exception as err:
        lost = lost_processes(wait_s=LOSS_SEEN_WITHIN_S)
        if lost:
            raise PeerLostError(lost_message(lost)) from err
        raise


__all__ = [
    "PeerLostError",
    "agree",
    "allgather",
    "detect_cluster",
    "initialize",
    "is_primary",
    "lost_message",
    "lost_processes",
    "primary_agrees",
    "start_watchdog",
    "stop_watchdog",
]
