"""Where the hot-path client connects and how it logs in: a ``PARETO_REDIS_URL`` taken apart.

The URL forms are redis-py's (``Redis.from_url``), so one setting serves both clients:
``redis://[[user]:password@]host[:port][/db]``, ``rediss://…`` (TLS) and
``unix://[[user]:password@]/path/to.sock[?db=N]``; ``?db=N`` overrides the path's db.
``rediss://`` options (``ssl_ca_certs``, ``ssl_certfile``, ``ssl_cert_reqs``…) are redis-py's
too: see :mod:`app.fastredis.tls`. redis-py's pool and socket options (``socket_timeout``,
``max_connections``…) do not apply to this client, whose timeouts come from
``PARETO_REDIS_TIMEOUT_S``; they are accepted and ignored.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from urllib.parse import parse_qs, unquote, urlparse

from app.fastredis.tls import tls_context


@dataclass(frozen=True, slots=True)
class Address:
    """A Redis server's address and the login commands a new connection sends first."""

    host: str = "localhost"
    port: int = 6379
    path: str | None = None  # a Unix socket instead of host:port
    username: str | None = None
    password: str | None = None
    db: int = 0
    tls: ssl.SSLContext | None = None

    @property
    def where(self) -> str:
        """For error messages (never the password)."""
        return f"unix://{self.path}" if self.path else f"{self.host}:{self.port}"

    def handshake(self) -> list[tuple[str | int, ...]]:
        """AUTH and SELECT, as needed, in the order Redis wants them."""
        commands: list[tuple[str | int, ...]] = []
        if self.password is not None:
            if self.username:
                commands.append(("AUTH", self.username, self.password))
            else:
                commands.append(("AUTH", self.password))
        if self.db:
            commands.append(("SELECT", self.db))
        return commands


def parse_address(url: str) -> Address:
    """Take a ``redis://``, ``rediss://`` or ``unix://`` URL apart (ValueError otherwise)."""
    parts = urlparse(url)
    if parts.scheme not in ("redis", "rediss", "unix"):
        raise ValueError(
            "Redis URL must use one of the schemes redis://, rediss:// or unix:// "
            f"(got {parts.scheme or 'none'}://)"
        )
    query = {name: values[0] for name, values in parse_qs(parts.query).items() if values}
    username = unquote(parts.username) if parts.username else None
    password = unquote(parts.password) if parts.password else None
    db = 0
    if "db" in query:
        db = _int(query["db"], "db")
    elif parts.scheme != "unix" and parts.path.strip("/"):
        db = _int(unquote(parts.path).replace("/", ""), "db")
    if parts.scheme == "unix":
        if not parts.path:
            raise ValueError("unix:// Redis URL needs a socket path")
        return Address(path=unquote(parts.path), username=username, password=password, db=db)
    return Address(
        host=unquote(parts.hostname) if parts.hostname else "localhost",
        port=parts.port or 6379,
        username=username,
        password=password,
        db=db,
        tls=tls_context(query) if parts.scheme == "rediss" else None,
    )


def _int(text: str, name: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"Invalid value for {name!r} in Redis URL: {text!r}") from None
