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
from tests.support.tls import TlsFiles


class RedisServer:
    """One redis-server process we own, stoppable and restartable on the same port."""

    def __init__(
        self,
        tmp: Path,
        port: int | None = None,
        password: str | None = None,
        tls: TlsFiles | None = None,
        client_certs: bool = False,
    ) -> None:
        """``tls``: TLS only, on ``port`` (no plain-text port), ``url`` is ``rediss://localhost``
        with the CA (the certificate names ``localhost``); ``client_certs``: clients must
        present a certificate the CA signed."""
        self.port = port or free_port()
        self.password = password
        self.tls = tls
        self.client_certs = client_certs
        auth = f":{password}@" if password else ""
        if tls is None:
            self.url = f"redis://{auth}127.0.0.1:{self.port}/0"
        else:
            self.url = f"rediss://{auth}localhost:{self.port}/0?ssl_ca_certs={tls.ca}"
        self._tmp = tmp
        self._popen: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    def start(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed (.ci/run installs it)")
        self._log = log = (self._tmp / f"redis-{self.port}.log").open("ab")
        extra = ["--requirepass", self.password] if self.password else []
        ports = ["--port", str(self.port)]
        tls = self.tls
        if tls is not None:
            ports = ["--port", "0", "--tls-port", str(self.port)]
            extra += [
                "--tls-cert-file", str(tls.server_cert),
                "--tls-key-file", str(tls.server_key),
                "--tls-ca-cert-file", str(tls.ca),
                "--tls-auth-clients", "yes" if self.client_certs else "no",
            ]  # fmt: skip
        self._popen = subprocess.Popen(
            [
                binary,
                *ports,
                "--bind",
                "127.0.0.1",
                "--dir",
                str(self._tmp),
                "--save",
                "",
                "--appendonly",
                "no",
                *extra,
            ],
            cwd=self._tmp,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        client = redis.Redis(
            host="localhost" if tls else "127.0.0.1",
            port=self.port,
            password=self.password,
            socket_timeout=0.5,
            ssl=tls is not None,
            ssl_ca_certs=str(tls.ca) if tls else None,
            ssl_certfile=str(tls.client_cert) if tls and self.client_certs else None,
            ssl_keyfile=str(tls.client_key) if tls and self.client_certs else None,
        )
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
def redis_server(
    tmp: Path, password: str | None = None, tls: TlsFiles | None = None, client_certs: bool = False
) -> Iterator[RedisServer]:
    """A started private server (plain, or TLS-only with ``tls``), killed by PID on exit."""
    server = RedisServer(tmp, password=password, tls=tls, client_certs=client_certs)
    server.start()
    try:
        yield server
    finally:
        server.stop()
