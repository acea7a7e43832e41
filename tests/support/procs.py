"""Start real gateway / simulator processes on free loopback ports, and stop them by PID."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Proc:
    """A child process we started, with its base URL and its captured output file."""

    popen: subprocess.Popen[bytes]
    url: str
    log_path: Path

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


def wait_http(
    url: str, timeout_s: float = 20.0, proc: subprocess.Popen[bytes] | None = None
) -> None:
    deadline = time.monotonic() + timeout_s
    last: Exception | None = None
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before {url} answered")
        try:
            if httpx.get(url, timeout=1.0).status_code < 500:
                return
        except httpx.HTTPError as exc:
            last = exc
        time.sleep(0.1)
    raise TimeoutError(f"{url} did not answer within {timeout_s}s: {last}")


@contextmanager
def run_process(
    args: Sequence[str],
    health_url: str,
    log_path: Path,
    env: dict[str, str] | None = None,
    base_url: str = "",
) -> Iterator[Proc]:
    full_env = {**os.environ, **(env or {})}
    full_env.setdefault("PYTHONPATH", str(ROOT))
    # See tests/conftest.py: a generous Redis timeout unless a test sets its own.
    full_env.setdefault("PARETO_REDIS_TIMEOUT_S", "1.0")
    log = log_path.open("wb")
    popen = subprocess.Popen(
        [sys.executable, "-m", "app", *args],
        cwd=ROOT,
        env=full_env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_http(health_url, proc=popen)
        yield Proc(popen, base_url, log_path)
    finally:
        popen.terminate()
        try:
            popen.wait(timeout=10)
        except subprocess.TimeoutExpired:
            popen.kill()
            popen.wait()
        log.close()


@contextmanager
def gateway(
    config: Path,
    tmp: Path,
    env: dict[str, str] | None = None,
    workers: int = 1,
    name: str = "gateway",
) -> Iterator[Proc]:
    port = free_port()
    args = ["serve", "--config", str(config), "--port", str(port), "--workers", str(workers)]
    with run_process(
        args,
        f"http://127.0.0.1:{port}/healthz",
        tmp / f"{name}-{port}.log",
        env,
        base_url=f"http://127.0.0.1:{port}",
    ) as proc:
        yield proc


@contextmanager
def simulator(tmp: Path, *extra: str) -> Iterator[Proc]:
    port = free_port()
    args = ["simulate", "--port", str(port), *extra]
    with run_process(
        args,
        f"http://127.0.0.1:{port}/healthz",
        tmp / f"sim-{port}.log",
        base_url=f"http://127.0.0.1:{port}/v1",
    ) as proc:
        yield proc
