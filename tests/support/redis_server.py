"""A private ``redis-server`` on a free port, for tests that must kill and restart Redis.

Never the shared one at 6379: that one is only ever used with unique key prefixes.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

import redis

from tests.support.procs import free_port


class RedisServer:
    """One redis-server process we own, stoppable and restartable on the same port."""

    def __init__(self, tmp: Path, port: int | None = None, password: str | None = None) -> None:
        self.port = port or free_port()
        self.password = password
        auth = f":{password}@" if password else ""
        self.url = f"redis://{auth}127.0.0.1:{self.port}/0"
        self._tmp = tmp
        self._popen: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    def start(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed (.ci/run installs it)")
        self._log = log = (self._tmp / f"redis-{self.port}.log").open("ab")
        extra = ["--requirepass", self.password] if self.password else []
        self._popen = subprocess.Popen(
            [binary, "--port", str(self.port), "--save", "", "--appendonly", "no", *extra],
            cwd=self._tmp,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        client = redis.Redis(port=self.port, password=self.password, socket_timeout=0.5)
        deadline = time.monotonic() + 10
        try:
            while True:
                try:
                    client.ping()
                    return
                except redis.RedisError:
                    if time.monotonic() > deadline or self._popen.poll() is not None:
                        raise
                    time.sleep(0.05)
        finally:
            client.close()

    def stop(self) -> None:
        """Kill our server by its PID (no graceful save: it has no persistence anyway)."""
        if self._popen is None:
            return
        self._popen.kill()
        self._popen.wait(timeout=10)
        self._popen = None
        if self._log is not None:
            self._log.close()
            self._log = None


@contextmanager
def redis_server(tmp: Path, password: str | None = None) -> Iterator[RedisServer]:
    server = RedisServer(tmp, password=password)
    server.start()
    try:
        yield server
    finally:
        server.stop()
