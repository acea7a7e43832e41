"""A small asyncio Redis client for the per-request path (RESP2 over one connection).

Why it exists: with every feature on, a request makes up to five Redis round trips (session
lookup and write, rate-limit admission, budget hold and settlement). Through redis-py's
asyncio client each costs ~100 µs of CPU (pool checkout, connection lock, command packing
and parsing layers, ``asyncio.timeout``), which was ~20% of the gateway's CPU per request.
An ``asyncio.Protocol`` that packs with ``hiredis.pack_command`` and parses with
``hiredis.Reader`` costs ~22 µs for the same GET (``/work/prof/redisbench.py``-style loop,
loopback Redis); this client adds its FIFO, timeout and pipelining on top of that and stays
near it (see ``tests/benchmarks/bench_fastredis.py``).

What it does: one multiplexed connection per event loop (Redis answers in order, so a FIFO
of futures matches replies to callers); commands issued in the same loop iteration leave in
one write (auto-pipelining); one timeout for every call (a timed-out call's late reply is
dropped, the FIFO keeps its order); lazy (re)connect with a connect timeout, AUTH and SELECT
from the URL, TLS for ``rediss://`` with redis-py's options (:mod:`app.fastredis.tls`);
every waiter failed with ConnectionError when the connection is lost; Lua
scripts by EVALSHA with an EVAL fallback on NOSCRIPT; explicit multi-command pipelines.
Errors are redis-py's exception classes (``redis.exceptions.ConnectionError``,
``TimeoutError``, ``ResponseError``/``NoScriptError``, ``AuthenticationError``), so code that
handles ``RedisError`` works the same with either client.

What it deliberately does not do: pub/sub, blocking commands as a pattern (they would stall
every caller behind them), MULTI/EXEC transactions, Redis Cluster or Sentinel, RESP3 and
push messages, client-side caching, connection pools, retries (the callers decide:
sessions degrade to local memory, limits fail closed), per-call timeouts other than the
client's, reply decoding (replies are bytes). Admin, key management, feedback, readiness and
the CLI keep using redis-py, where those features and their cost are fine.
"""

from app.fastredis.address import Address, parse_address
from app.fastredis.client import Arg, Command, FastRedis, Script

__all__ = ["Address", "Arg", "Command", "FastRedis", "Script", "parse_address"]
