"""Counters behind rate limits and budgets: one atomic step per check, in Redis or in memory.

Rate limits are GCRA (the token bucket as one timestamp): a key with ``L`` per minute may
send ``L`` at once, then one every ``60/L`` seconds; the state is the *theoretical arrival
time* (TAT). Budgets are integer nano-USD per UTC day and month: ``spent`` (settled actual
cost) and ``held`` (estimates of requests in flight). A request is admitted while
``spent + held < limit`` and holds its estimate, so N concurrent requests on N replicas
overshoot a budget by at most one request (when estimates are not below actual costs).

Holds are recorded per request, so that none can outlive its request. The caller names each
hold with an id unique to the request (not its ``x-request-id``, which a client may reuse)
and an expiry (the request's deadline plus a margin). The hold records the amount under that
id in each period, with the expiry in an index; :meth:`Ledger.settle` releases exactly what
the record says and deletes it, so a second settle, or a settle whose hold was refused or
never arrived, releases nothing. That makes a *release by id* safe to send whenever it is
unknown whether a hold was applied (its reply came after the deadline, the connection broke
after the command left). A record nobody settles (the worker died between hold and settle,
the settle was lost) stops counting at its expiry: every hold first sweeps the expired
records of its periods (a bounded batch, so a hold stays one round trip of bounded work,
and each record is swept once). Until then it counts, and the admin's ``held`` shows it. A
request that outlives its record after all still has its cost charged when it settles.

With Redis every step is one Lua script, so all replicas share exact counts. Without Redis,
:class:`MemoryLedger` keeps the same counts, records and expiries per process (each replica
enforces its own). ``now`` is always passed in (wall-clock seconds) so tests drive time
explicitly; expiries are on the same clock (replicas' clocks differ by far less than the
margin).

A settle is applied at most once. The caller names it with an id of its own (the ticket's
hold id, or a fresh one when it holds nothing) and the settle script records that id, in the
same atomic step as the charge, as a mark that lives ``SETTLED_TTL_S``; a settle whose id is
marked applies nothing. So a settle whose reply was lost can be sent again: it charges what
the first attempt did not, and nothing if the first was applied (one round trip either way:
the check is inside the script). A *release by id* (no charge) needs no mark: releasing a
record twice releases nothing the second time.
"""

from __future__ import annotations

import datetime as dt
import functools
import heapq
import itertools
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from app.fastredis import FastRedis

NANO = 1_000_000_000
WINDOW_S = 60.0
_EPS = 1e-9
_DAY_TTL_S = 3 * 86400
_MONTH_TTL_S = 40 * 86400
# Expired hold records swept per period by one hold: bounds the script's work; a backlog
# (a worker died with many requests in flight) is cleared by the holds that follow.
SWEEP_BATCH = 64
_RECORDS = ":holds"  # suffix of a period's index of hold records (Redis)
# How long a settle's id stays marked as applied: far longer than a settle is retried for
# (:data:`app.auth.guard.RELEASE_RETRY_S`, ~6 s plus one Redis timeout per attempt), short
# enough that the marks of a busy key stay small (one small key per request, 2 min).
SETTLED_TTL_S = 120.0
_SETTLED_TTL_MS = int(SETTLED_TTL_S * 1000)


def to_nano(usd: float) -> int:
    """USD → integer nano-USD, rounded up (never under-hold)."""
    return max(0, math.ceil(usd * NANO - 1e-6))


@functools.lru_cache(maxsize=4)
def _utc_day(day: int) -> tuple[str, str, float, float]:
    """Day ``day`` since the epoch: its ``YYYYMMDD``, its ``YYYYMM``, the timestamps of the
    next midnight and of the next month's first (POSIX UTC days are 86,400 s exactly)."""
    t = dt.datetime.fromtimestamp(day * 86400, dt.UTC)
    first = dt.datetime(t.year + (t.month == 12), t.month % 12 + 1, 1, tzinfo=dt.UTC)
    return t.strftime("%Y%m%d"), t.strftime("%Y%m"), (day + 1) * 86400.0, first.timestamp()


@dataclass(frozen=True, slots=True)
class Periods:
    """The UTC day and month that ``now`` falls in, and seconds until each resets."""

    day: str
    month: str
    day_reset_s: float
    month_reset_s: float

    @classmethod
    def at(cls, now: float) -> Periods:
        # Per request: the calendar work is done once a day (it was 2-3% of a request's CPU).
        day, month, midnight, first = _utc_day(int(now // 86400))
        return cls(day, month, midnight - now, first - now)


@dataclass(frozen=True, slots=True)
class Spend:
    """Nano-USD settled and held in one period."""

    spent: int = 0
    held: int = 0

    @property
    def used(self) -> int:
        return self.spent + self.held


@dataclass(frozen=True, slots=True)
class RateVerdict:
    """Result of :meth:`Ledger.admit`: admitted, or which limit refused and for how long.

    ``day``/``month`` are the key's budget state at admission (for budget-aware routing).
    """

    ok: bool
    limit: str | None = None
    retry_after_s: float = 0.0
    day: Spend = Spend()
    month: Spend = Spend()


@dataclass(frozen=True, slots=True)
class BudgetVerdict:
    """Result of :meth:`Ledger.hold`: held, or which period's budget refused."""

    ok: bool
    period: str | None = None
    spend: Spend = Spend()


@dataclass(frozen=True, slots=True)
class Limits:
    """The numbers one check needs (from an :class:`~app.auth.config.ApiKey`)."""

    name: str
    requests_per_minute: int | None
    tokens_per_minute: int | None
    daily_nano: int | None
    monthly_nano: int | None


class Ledger(Protocol):
    """Atomic counters for rate limits and budgets."""

    async def admit(self, limits: Limits, tokens: int, now: float) -> RateVerdict: ...

    async def hold(
        self,
        limits: Limits,
        amount: int,
        periods: Periods,
        now: float,
        *,
        hold_id: str,
        ttl_s: float,
    ) -> BudgetVerdict:
        """Hold ``amount`` under ``hold_id`` (added to what it holds) until ``now + ttl_s``,
        unless a budget is used up; expired records of these periods are swept first."""
        ...

    async def settle(
        self,
        limits: Limits,
        hold_id: str | None,
        actual: int,
        extra_tokens: int,
        periods: Periods,
        now: float,
        *,
        settle_id: str | None = None,
    ) -> bool:
        """Release what ``hold_id``'s record holds (nothing when there is none), charge
        ``actual`` and correct the token count by ``extra_tokens``.

        With ``settle_id``, all of it at most once: False (nothing applied) when a settle
        with this id was applied in the last ``SETTLED_TTL_S``; True when applied now."""
        ...

    async def spend(self, name: str, periods: Periods) -> tuple[Spend, Spend]: ...


def _interval(per_minute: int | None) -> float:
    return WINDOW_S / per_minute if per_minute else 0.0


def _gcra(tat: float, now: float, interval: float, cost: float) -> tuple[float, float]:
    """(new TAT, seconds over the burst window; > 0 means refuse)."""
    new = max(tat, now) + interval * cost
    return new, new - now - WINDOW_S


# -- Redis ---------------------------------------------------------------------------------

_ADMIT = """
local now = tonumber(ARGV[1])
local function gcra(key, interval, cost)
  if interval <= 0 then return nil, 0 end
  local tat = tonumber(redis.call('GET', key) or '0')
  if tat < now then tat = now end
  local new = tat + interval * cost
  return new, new - now - 60
end
local rnew, rover = gcra(KEYS[1], tonumber(ARGV[2]), 1)
if rnew and rover > 1e-9 then return {0, 'requests_per_minute', tostring(rover)} end
local tnew, tover = gcra(KEYS[2], tonumber(ARGV[3]), tonumber(ARGV[4]))
if tnew and tover > 1e-9 then return {0, 'tokens_per_minute', tostring(tover)} end
local function store(key, tat)
  redis.call('SET', key, tostring(tat), 'PX', math.ceil((tat - now + 1) * 1000))
end
if rnew then store(KEYS[1], rnew) end
if tnew then store(KEYS[2], tnew) end
if ARGV[5] == '1' then
  local d = redis.call('HMGET', KEYS[3], 'spent', 'held')
  local m = redis.call('HMGET', KEYS[4], 'spent', 'held')
  return {1, '', '0', d[1] or '0', d[2] or '0', m[1] or '0', m[2] or '0'}
end
return {1, '', '0'}
"""

_HOLD = """
-- KEYS: the day's and the month's hash (spent, held, 'h:' .. id = amount per record),
-- the day's and the month's record index (sorted set: id by expiry).
local id, amount = ARGV[1], tonumber(ARGV[2])
local limits = {tonumber(ARGV[3]), tonumber(ARGV[4])}
local now, expires = ARGV[7], tonumber(ARGV[8])
local names = {'daily', 'monthly'}
local state = {}
for i = 1, 2 do
  local hash, index = KEYS[i], KEYS[2 + i]
  -- Records nobody settled (worker gone, settle lost) stop counting at their expiry.
  local gone = redis.call('ZRANGEBYSCORE', index, '-inf', now, 'LIMIT', 0, ARGV[9])
  if #gone > 0 then
    local fields = {}
    for j, g in ipairs(gone) do fields[j] = 'h:' .. g end
    local total = 0
    for _, a in ipairs(redis.call('HMGET', hash, unpack(fields))) do
      if a then total = total + tonumber(a) end
    end
    if total ~= 0 then redis.call('HINCRBY', hash, 'held', -total) end
    redis.call('HDEL', hash, unpack(fields))
    redis.call('ZREM', index, unpack(gone))
  end
  local v = redis.call('HMGET', hash, 'spent', 'held')
  state[i] = {tonumber(v[1] or '0'), tonumber(v[2] or '0')}
end
for i = 1, 2 do
  local spent, held = state[i][1], state[i][2]
  if limits[i] >= 0 and spent + held >= limits[i] then return {0, names[i], spent, held} end
end
if amount > 0 then
  local field = 'h:' .. id
  for i = 1, 2 do
    local hash, index = KEYS[i], KEYS[2 + i]
    redis.call('HINCRBY', hash, 'held', amount)
    redis.call('HINCRBY', hash, field, amount)
    local old = redis.call('ZSCORE', index, id)
    if not old or tonumber(old) < expires then redis.call('ZADD', index, expires, id) end
    redis.call('EXPIRE', hash, ARGV[4 + i])
    redis.call('EXPIRE', index, ARGV[4 + i])
  end
end
return {1, '', state[1][1], state[1][2]}
"""

_SETTLE = """
-- KEYS: as for a hold, then the token TAT, then (with a settle id) the settle's mark.
-- ARGV[1]: the hold's id ('' = none); ARGV[9]: the mark's life in ms ('' = no mark: a
-- release by id, which is idempotent without one).
-- A settle whose mark exists was applied already (its reply was lost): apply nothing.
if ARGV[9] ~= '' and not redis.call('SET', KEYS[6], '1', 'NX', 'PX', ARGV[9]) then
  return 0
end
local id, actual = ARGV[1], tonumber(ARGV[2])
if ARGV[7] == '1' and (id ~= '' or actual ~= 0) then
  for i = 1, 2 do
    local hash, release = KEYS[i], 0
    if id ~= '' then
      -- Exactly what the record holds; no record (settled already, never applied, or
      -- swept at its expiry) releases nothing.
      local field = 'h:' .. id
      release = tonumber(redis.call('HGET', hash, field) or '0')
      if release ~= 0 then
        redis.call('HDEL', hash, field)
        redis.call('ZREM', KEYS[2 + i], id)
        redis.call('HINCRBY', hash, 'held', -release)
      end
    end
    -- Lua's -0 reaches Redis as "-0", which HINCRBY refuses: never send a zero.
    if actual ~= 0 then redis.call('HINCRBY', hash, 'spent', actual) end
    if release ~= 0 or actual ~= 0 then redis.call('EXPIRE', hash, ARGV[2 + i]) end
  end
end
local interval, extra, now = tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[8])
if interval > 0 and extra ~= 0 then
  local tat = tonumber(redis.call('GET', KEYS[5]) or '0')
  if extra > 0 and tat < now then tat = now end
  tat = tat + interval * extra
  if tat > now then
    redis.call('SET', KEYS[5], tostring(tat), 'PX', math.ceil((tat - now + 1) * 1000))
  else
    redis.call('DEL', KEYS[5])  -- refunded down to now: nothing left to wait for
  end
end
return 1
"""


class RedisLedger:
    """Shared counters: each call is one Lua script (atomic across every replica).

    Runs on the hot-path client (:mod:`app.fastredis`): scripts by EVALSHA on the process's
    one multiplexed connection, under ``PARETO_REDIS_TIMEOUT_S``. A period's hash holds
    ``spent``, ``held`` and one ``h:<hold id>`` field per live hold record; the sorted set
    ``<hash>:holds`` indexes those records by expiry. Both expire with the period. An
    applied settle leaves the key ``settled:<settle id>`` for ``SETTLED_TTL_S``.
    """

    def __init__(self, redis: FastRedis, prefix: str) -> None:
        self._redis = redis
        self._prefix = prefix
        self._admit = redis.register_script(_ADMIT)
        self._hold = redis.register_script(_HOLD)
        self._settle = redis.register_script(_SETTLE)

    def _keys(self, name: str, periods: Periods) -> tuple[str, str, str, str]:
        p = self._prefix
        return (
            f"{p}rl:{name}:req",
            f"{p}rl:{name}:tok",
            f"{p}budget:{name}:d:{periods.day}",
            f"{p}budget:{name}:m:{periods.month}",
        )

    async def admit(self, limits: Limits, tokens: int, now: float) -> RateVerdict:
        req, tok, day, month = self._keys(limits.name, Periods.at(now))
        budget = limits.daily_nano is not None or limits.monthly_nano is not None
        out = await self._admit(
            keys=[req, tok, day, month],
            args=[
                repr(now),
                repr(_interval(limits.requests_per_minute)),
                repr(_interval(limits.tokens_per_minute)),
                tokens,
                "1" if budget else "0",
            ],
        )
        if int(out[0]) == 0:
            return RateVerdict(False, _text(out[1]), float(out[2]))
        if len(out) > 3:
            return RateVerdict(
                True,
                day=Spend(int(out[3]), int(out[4])),
                month=Spend(int(out[5]), int(out[6])),
            )
        return RateVerdict(True)

    async def hold(
        self,
        limits: Limits,
        amount: int,
        periods: Periods,
        now: float,
        *,
        hold_id: str,
        ttl_s: float,
    ) -> BudgetVerdict:
        _, _, day, month = self._keys(limits.name, periods)
        out = await self._hold(
            keys=[day, month, day + _RECORDS, month + _RECORDS],
            args=[
                hold_id,
                amount,
                -1 if limits.daily_nano is None else limits.daily_nano,
                -1 if limits.monthly_nano is None else limits.monthly_nano,
                _DAY_TTL_S,
                _MONTH_TTL_S,
                repr(now),
                repr(now + ttl_s),
                SWEEP_BATCH,
            ],
        )
        if int(out[0]) == 0:
            return BudgetVerdict(False, _text(out[1]), Spend(int(out[2]), int(out[3])))
        return BudgetVerdict(True)

    async def settle(
        self,
        limits: Limits,
        hold_id: str | None,
        actual: int,
        extra_tokens: int,
        periods: Periods,
        now: float,
        *,
        settle_id: str | None = None,
    ) -> bool:
        _, tok, day, month = self._keys(limits.name, periods)
        budget = limits.daily_nano is not None or limits.monthly_nano is not None
        keys = [day, month, day + _RECORDS, month + _RECORDS, tok]
        if settle_id:
            keys.append(f"{self._prefix}settled:{settle_id}")
        out = await self._settle(
            keys=keys,
            args=[
                hold_id or "",
                actual,
                _DAY_TTL_S,
                _MONTH_TTL_S,
                repr(_interval(limits.tokens_per_minute)),
                extra_tokens,
                "1" if budget else "0",
                repr(now),
                _SETTLED_TTL_MS if settle_id else "",
            ],
        )
        return int(out) == 1

    async def spend(self, name: str, periods: Periods) -> tuple[Spend, Spend]:
        _, _, day, month = self._keys(name, periods)
        d, m = await self._redis.pipeline(
            [("HMGET", day, "spent", "held"), ("HMGET", month, "spent", "held")]
        )
        return Spend(int(d[0] or 0), int(d[1] or 0)), Spend(int(m[0] or 0), int(m[1] or 0))


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


# -- in memory (one process) --------------------------------------------------------------


class _Period:
    """One key's budget state in one period, with its live hold records (in memory)."""

    __slots__ = ("expiries", "held", "records", "spent")

    def __init__(self) -> None:
        self.spent = 0
        self.held = 0
        self.records: dict[str, tuple[int, float]] = {}  # hold id → (amount, expires at)
        # (expires at, hold id), earliest first; entries of settled or extended records stay
        # until popped or compacted (a record's current expiry is in ``records``).
        self.expiries: list[tuple[float, str]] = []

    def sweep(self, now: float) -> None:
        """Drop the records expired by ``now`` (their holds stop counting)."""
        expiries, records = self.expiries, self.records
        while expiries and expiries[0][0] <= now:
            _, hold_id = heapq.heappop(expiries)
            record = records.get(hold_id)
            if record is not None and record[1] <= now:
                del records[hold_id]
                self.held -= record[0]

    def add(self, hold_id: str, amount: int, expires: float) -> None:
        old_amount, old_expires = self.records.get(hold_id, (0, expires))
        expires = max(expires, old_expires)
        self.records[hold_id] = (old_amount + amount, expires)
        self.held += amount
        heapq.heappush(self.expiries, (expires, hold_id))

    def release(self, hold_id: str) -> None:
        record = self.records.pop(hold_id, None)
        if record is None:
            return
        self.held -= record[0]
        if len(self.expiries) > 2 * len(self.records) + 64:  # mostly settled records
            self.expiries = [(exp, rid) for rid, (_, exp) in self.records.items()]
            heapq.heapify(self.expiries)


class MemoryLedger:
    """The same counts in one process's memory (no Redis: each replica counts alone)."""

    def __init__(self) -> None:
        self._tat: dict[str, float] = {}
        self._spend: dict[str, _Period] = {}
        # Settle id → when its mark expires, in the order applied (so, earliest first).
        self._settled: dict[str, float] = {}

    def _budget(self, key: str) -> _Period:
        period = self._spend.get(key)
        if period is None:
            period = self._spend[key] = _Period()
        return period

    async def admit(self, limits: Limits, tokens: int, now: float) -> RateVerdict:
        req_key, tok_key = f"{limits.name}:req", f"{limits.name}:tok"
        req_new = tok_new = None
        if limits.requests_per_minute:
            req_new, over = _gcra(
                self._tat.get(req_key, 0.0), now, _interval(limits.requests_per_minute), 1
            )
            if over > _EPS:
                return RateVerdict(False, "requests_per_minute", over)
        if limits.tokens_per_minute:
            tok_new, over = _gcra(
                self._tat.get(tok_key, 0.0), now, _interval(limits.tokens_per_minute), tokens
            )
            if over > _EPS:
                return RateVerdict(False, "tokens_per_minute", over)
        if req_new is not None:
            self._tat[req_key] = req_new
        if tok_new is not None:
            self._tat[tok_key] = tok_new
        day, month = await self.spend(limits.name, Periods.at(now))
        return RateVerdict(True, day=day, month=month)

    async def hold(
        self,
        limits: Limits,
        amount: int,
        periods: Periods,
        now: float,
        *,
        hold_id: str,
        ttl_s: float,
    ) -> BudgetVerdict:
        slots = (
            ("daily", limits.daily_nano, self._budget(f"{limits.name}:d:{periods.day}")),
            ("monthly", limits.monthly_nano, self._budget(f"{limits.name}:m:{periods.month}")),
        )
        for _, _, state in slots:
            state.sweep(now)
        for period, limit, state in slots:
            if limit is not None and state.spent + state.held >= limit:
                return BudgetVerdict(False, period, Spend(state.spent, state.held))
        if amount > 0:
            for _, _, state in slots:
                state.add(hold_id, amount, now + ttl_s)
        return BudgetVerdict(True)

    async def settle(
        self,
        limits: Limits,
        hold_id: str | None,
        actual: int,
        extra_tokens: int,
        periods: Periods,
        now: float,
        *,
        settle_id: str | None = None,
    ) -> bool:
        if settle_id:
            settled = self._settled
            for old in list(itertools.takewhile(lambda i: settled[i] <= now, settled)):
                del settled[old]
            if settle_id in settled:
                return False
            settled[settle_id] = now + SETTLED_TTL_S
        if limits.daily_nano is not None or limits.monthly_nano is not None:
            for key in (f"{limits.name}:d:{periods.day}", f"{limits.name}:m:{periods.month}"):
                state = self._budget(key)
                if hold_id is not None:
                    state.release(hold_id)
                state.spent += actual
        interval = _interval(limits.tokens_per_minute)
        if interval and extra_tokens:
            key = f"{limits.name}:tok"
            tat = self._tat.get(key, 0.0)
            if extra_tokens > 0:
                tat = max(tat, now)
            self._tat[key] = tat + interval * extra_tokens
        return True

    async def spend(self, name: str, periods: Periods) -> tuple[Spend, Spend]:
        d = self._spend.get(f"{name}:d:{periods.day}")
        m = self._spend.get(f"{name}:m:{periods.month}")
        return (
            Spend(d.spent, d.held) if d is not None else Spend(),
            Spend(m.spent, m.held) if m is not None else Spend(),
        )
