"""``pareto serve --workers N``: a SO_REUSEPORT socket per worker, restarts, SIGHUP, taken port."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import yaml

from tests.conftest import sim_deployment, small_config
from tests.support.procs import ROOT, free_port, gateway

pytestmark = pytest.mark.e2e


def children(pid: int) -> set[int]:
    found: set[int] = set()
    for task in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{task}/children") as f:
            found.update(int(c) for c in f.read().split())
    return found


def workers_of(pid: int) -> set[int]:
    """The supervisor's uvicorn workers (its spawn helper, the resource tracker, is not one)."""
    out = set()
    for child in children(pid):
        try:
            with open(f"/proc/{child}/cmdline", "rb") as f:
                cmdline = f.read()
        except OSError:
            continue  # gone meanwhile
        if b"multiprocessing.spawn" in cmdline and b"resource_tracker" not in cmdline:
            out.add(child)
    return out


def wait_for(predicate, timeout: float = 20.0):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError("condition not met in time")


def config_file(tmp: Path, extra_model: str | None = None) -> Path:
    config = small_config(**({f"{extra_model}@sim": sim_deployment()} if extra_model else {}))
    if extra_model:
        config["models"][extra_model] = {"quality": 50, "context_window": 8000}
    path = tmp / "gateway.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_each_worker_listens_on_its_own_socket(tmp_path: Path) -> None:
    with gateway(config_file(tmp_path), tmp_path, workers=2) as gw:
        parent = gw.popen.pid
        workers = wait_for(lambda: len(workers_of(parent)) == 2 and workers_of(parent))
        port = int(gw.url.rsplit(":", 1)[1])
        listening = {pid: listening_inodes(pid, port) for pid in workers}
        # Two different listening sockets (the kernel spreads new connections over them);
        # uvicorn's own supervisor would show one socket shared by both.
        assert all(len(inodes) == 1 for inodes in listening.values()), listening
        assert len(set().union(*listening.values())) == 2
        for _ in range(20):
            assert httpx.get(f"{gw.url}/healthz").status_code == 200


def listening_inodes(pid: int, port: int) -> set[str]:
    """Inodes of the sockets in LISTEN state on ``port`` that process ``pid`` holds."""
    wanted = f":{port:04X}"
    inodes = set()
    with open(f"/proc/{pid}/net/tcp") as f:
        for line in f.read().splitlines()[1:]:
            fields = line.split()
            if fields[1].endswith(wanted) and fields[3] == "0A":  # 0A = LISTEN
                inodes.add(fields[9])
    held = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            held.add(target[8:-1])
    return inodes & held


def test_a_dead_worker_is_replaced_and_sighup_reloads_every_worker(tmp_path: Path) -> None:
    path = config_file(tmp_path)
    env = {"PARETO_WATCH_CONFIG": "false"}
    with gateway(path, tmp_path, workers=2, env=env) as gw:
        parent = gw.popen.pid
        first = wait_for(lambda: len(workers_of(parent)) == 2 and workers_of(parent))
        victim = sorted(first)[0]
        os.kill(victim, signal.SIGKILL)

        def replaced() -> set[int]:
            now = workers_of(parent)  # one snapshot: a just-spawned worker shows up late
            return now if len(now) == 2 and victim not in now else set()

        after = wait_for(replaced)
        assert victim not in after and len(after - first) == 1
        wait_for(lambda: httpx.get(f"{gw.url}/healthz").status_code == 200)

        config_file(tmp_path, "added-by-reload")
        os.kill(parent, signal.SIGHUP)

        def models() -> set[str]:
            return {m["id"] for m in httpx.get(f"{gw.url}/v1/models").json()["data"]}

        wait_for(lambda: "added-by-reload" in models())
        time.sleep(1.0)  # both workers got the same signal at the same moment
        # Then every fresh connection, whichever worker takes it, has the new config; 40 of
        # them miss one worker with probability 2**-40.
        assert all("added-by-reload" in models() for _ in range(40))
        assert gw.popen.poll() is None


def test_a_taken_port_fails_at_once_with_a_clear_message(tmp_path: Path) -> None:
    port = free_port()
    taken = socket.socket()
    taken.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)  # even a reuse-port holder
    taken.bind(("127.0.0.1", port))
    taken.listen()
    try:
        done = subprocess.run(
            [sys.executable, "-m", "app", "serve", "--config", str(config_file(tmp_path))]
            + ["--port", str(port), "--workers", "2"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
    finally:
        taken.close()
    assert done.returncode != 0
    assert f"cannot listen on 127.0.0.1:{port}" in done.stderr


def test_invalid_settings_are_refused_before_any_worker_starts(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "app", "serve", "--config", str(config_file(tmp_path))]
        + ["--port", str(free_port()), "--workers", "2"],
        cwd=ROOT,
        env={**os.environ, "PARETO_MAX_BODY_BYTES": "-1"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "invalid settings: PARETO_MAX_BODY_BYTES" in done.stderr


def test_workers_that_cannot_start_stop_the_supervisor(tmp_path: Path) -> None:
    # An app that fails while each worker starts: the supervisor gives up (exit 1) instead
    # of restarting workers forever, so an orchestrator sees the failure.
    script = (
        "import sys\n"
        "from app.workers import Supervisor\n"
        "options = {'app': 'tests.no_such_module:app', 'host': '127.0.0.1', "
        f"'port': {free_port()}, 'log_level': 'critical'}}\n"
        "sys.exit(Supervisor(options, 2).run())\n"
    )
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 1, done.stderr[-2000:]
    assert "workers_cannot_start" in done.stdout + done.stderr
    assert time.monotonic() - started < 30
