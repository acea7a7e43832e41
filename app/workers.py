"""``pareto serve --workers N``: N worker processes, each with its own listening socket.

uvicorn's own supervisor shares one listening socket between its workers; whichever wakes
first accepts, and uvloop accepts everything that is queued in one go, so a burst of new
connections (a client opening its keep-alive pool) lands mostly on one worker. Measured on
this project's 2-core machine at 64 keep-alive connections: 2.31 vs 1.27 CPU-seconds in the
same run, the busy worker capping throughput. Here every worker binds the port with
``SO_REUSEPORT`` and the kernel spreads new connections across them by their addresses.

The parent binds the port first (without listening: it receives no connections) so a port
that is taken fails at once with a clear error, restarts a worker that dies (with a pause
when it died right after starting), forwards ``SIGHUP`` (config reload, see
:mod:`app.catalog.reload`) to the workers, and on ``SIGTERM``/``SIGINT`` stops them
gracefully (each drains its in-flight requests, uvicorn's ``timeout_graceful_shutdown``).
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import socket
import time
from multiprocessing.process import BaseProcess
from types import FrameType
from typing import Any

import structlog

log = structlog.get_logger("pareto.workers")

_BACKLOG = 2048
_RESTART_PAUSE_S = 1.0  # before restarting a worker that died within its first seconds
_EARLY_DEATH_S = 5.0
_EARLY_DEATHS_TO_GIVE_UP = 3  # in a row: the workers cannot start, so stop (exit 1)


def reuseport_socket(host: str, port: int) -> socket.socket:
    """A TCP socket bound to (host, port) with SO_REUSEPORT (not listening yet)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.set_inheritable(False)
    return sock


def _worker(options: dict[str, Any]) -> None:
    """One worker process: its own listening socket, one uvicorn server."""
    import uvicorn

    # A reload signal that arrives while this worker starts must not kill it (SIGHUP's
    # default action); the app installs its own handler once it runs, and it reads the
    # config file as it starts anyway.
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    sock = reuseport_socket(options["host"], options["port"])
    sock.listen(_BACKLOG)
    server = uvicorn.Server(uvicorn.Config(**options))
    server.run(sockets=[sock])


class Supervisor:
    """Starts ``workers`` processes running uvicorn with ``options`` and keeps them up."""

    def __init__(self, options: dict[str, Any], workers: int) -> None:
        self._options = options
        self._count = workers
        self._context = multiprocessing.get_context("spawn")
        self._processes: list[tuple[BaseProcess, float]] = []
        self._stopping = False
        self._early_deaths = 0  # in a row; reset when a worker outlives _EARLY_DEATH_S

    def _start(self) -> tuple[BaseProcess, float]:
        process = self._context.Process(target=_worker, args=(self._options,), daemon=False)
        process.start()
        return process, time.monotonic()

    def _on_stop(self, signum: int, frame: FrameType | None) -> None:
        self._stopping = True

    def _on_hup(self, signum: int, frame: FrameType | None) -> None:
        for process, _ in self._processes:
            if process.pid is not None and process.is_alive():
                _signal_pid(process.pid, signal.SIGHUP)

    def run(self) -> int:
        """Serve until SIGTERM/SIGINT (0), or 1 when workers keep dying as they start."""
        host, port = self._options["host"], self._options["port"]
        # A plain bind first: with SO_REUSEPORT alone, a second gateway started on the same
        # port would silently share it. Raises OSError (EADDRINUSE) before any worker starts.
        probe = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT is fine
        try:
            probe.bind((host, port))
        finally:
            probe.close()
        holder = reuseport_socket(host, port)
        signal.signal(signal.SIGTERM, self._on_stop)
        signal.signal(signal.SIGINT, self._on_stop)
        signal.signal(signal.SIGHUP, self._on_hup)
        try:
            self._processes = [self._start() for _ in range(self._count)]
            log.info("workers_started", workers=self._count, pids=self.pids())
            while not self._stopping:
                time.sleep(0.2)
                if not self._restart_dead():
                    log.error(
                        "workers_cannot_start",
                        early_deaths=self._early_deaths,
                        message="workers keep exiting right after they start; see their "
                        "errors above. Stopping.",
                    )
                    return 1
            return 0
        finally:
            self._stop_all()
            holder.close()

    def pids(self) -> list[int]:
        return [p.pid for p, _ in self._processes if p.pid is not None]

    def _restart_dead(self) -> bool:
        """Replace dead workers; False once too many have died right after starting."""
        now = time.monotonic()
        for i, (process, started) in enumerate(self._processes):
            if process.is_alive() and now - started > _EARLY_DEATH_S:
                self._early_deaths = 0  # one worker got going: not a start-up failure
            if process.is_alive() or self._stopping:
                continue
            process.join()
            early = time.monotonic() - started < _EARLY_DEATH_S
            log.error("worker_died", pid=process.pid, exitcode=process.exitcode, restarting=True)
            if early:
                self._early_deaths += 1
                if self._early_deaths >= _EARLY_DEATHS_TO_GIVE_UP:
                    return False
                time.sleep(_RESTART_PAUSE_S)  # a worker that cannot start: do not spin
                if self._stopping:
                    return True
            self._processes[i] = self._start()
        return True

    def _stop_all(self) -> None:
        for process, _ in self._processes:
            if process.pid is not None and process.is_alive():
                _signal_pid(process.pid, signal.SIGTERM)
        grace = float(self._options.get("timeout_graceful_shutdown") or 30)
        deadline = time.monotonic() + grace + 5
        for process, _ in self._processes:
            process.join(max(0.0, deadline - time.monotonic()))
            if process.is_alive():
                process.kill()
                process.join()


def _signal_pid(pid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signum)
