"""Live per-deployment estimates and output-length priors, refined by telemetry.

No I/O: the gateway calls :meth:`LiveEstimates.started` / :meth:`LiveEstimates.finished`
around each upstream attempt, and :meth:`OutputPriors.observe` with the completion tokens of
requests that did not set ``max_tokens``. The router reads the blended arrays.

Model, per deployment:

- TTFT and decode speed are EWMAs of observed attempts (``alpha`` per observation). A
  streamed attempt gives both (time to first token; tokens after it / the time they took).
  A non-streamed one gives only its total time, which scales both figures by
  ``observed / predicted``.
- The estimate used is a blend: ``w = n / (n + prior_weight)`` of the EWMA and ``1 - w`` of
  the catalog figure, so a handful of attempts cannot swing a decision alone.
- Requests in flight are queueing: TTFT is multiplied by ``1 + in_flight / queue_capacity``.

Arrays are kept aligned with the bound :class:`CatalogTable` and updated in place (O(1) per
event), so a routing decision pays nothing for them. Stats are keyed by deployment id and
survive a config reload (:meth:`LiveEstimates.bind`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from app.routing.table import CatalogTable, FloatArray


@dataclass(slots=True)
class _Stat:
    ttft_s: float = 0.0
    tps: float = 0.0
    samples: int = 0
    in_flight: int = 0


class LiveEstimates:
    """EWMA TTFT / decode speed and in-flight counts per deployment, blended with the catalog."""

    def __init__(
        self, alpha: float = 0.2, prior_weight: float = 5.0, queue_capacity: float = 32.0
    ) -> None:
        self.alpha = alpha
        self.prior_weight = prior_weight
        self.queue_capacity = queue_capacity
        self._stats: dict[str, _Stat] = {}
        self._table: CatalogTable | None = None
        # The table's [p_in, p_out, ttft, 1/tps] matrix with live ttft / 1/tps columns.
        self.matrix: FloatArray = np.zeros((0, 4))
        self.ttft_s: FloatArray = self.matrix[:, 2]
        self.inv_tps: FloatArray = self.matrix[:, 3]

    def configure(self, alpha: float, prior_weight: float, queue_capacity: float) -> None:
        """New tuning from a reloaded config; takes effect at the next :meth:`bind`."""
        self.alpha, self.prior_weight, self.queue_capacity = alpha, prior_weight, queue_capacity

    @property
    def table(self) -> CatalogTable | None:
        return self._table

    def bind(self, table: CatalogTable) -> None:
        """Align the arrays with a (new) catalog table, keeping the stats by deployment id."""
        self._table = table
        self.matrix = table.matrix.copy()
        self.ttft_s = self.matrix[:, 2]  # views: updating them updates the matrix
        self.inv_tps = self.matrix[:, 3]
        for dep_id, i in table.index.items():
            self._refresh(dep_id, i)

    def _stat(self, dep_id: str) -> _Stat:
        stat = self._stats.get(dep_id)
        if stat is None:
            stat = self._stats[dep_id] = _Stat()
        return stat

    def _refresh(self, dep_id: str, i: int | None = None) -> None:
        table = self._table
        if table is None:
            return
        if i is None:
            i = table.index.get(dep_id)
            if i is None:
                return
        stat = self._stats.get(dep_id)
        static_ttft = float(table.ttft_s[i])
        static_inv = float(table.inv_tps[i])
        if stat is None:
            self.ttft_s[i] = static_ttft
            self.inv_tps[i] = static_inv
            return
        w = stat.samples / (stat.samples + self.prior_weight) if stat.samples else 0.0
        ttft = (1 - w) * static_ttft + w * stat.ttft_s
        tps = (1 - w) / static_inv + w * stat.tps if stat.samples else 1 / static_inv
        self.ttft_s[i] = ttft * (1 + stat.in_flight / self.queue_capacity)
        self.inv_tps[i] = 1.0 / max(tps, 1e-6)

    def estimate(self, dep_id: str) -> tuple[float, float]:
        """(TTFT seconds, decode tokens/s) currently used for a deployment."""
        table = self._table
        i = table.index.get(dep_id) if table else None
        if i is None:
            raise KeyError(dep_id)
        return float(self.ttft_s[i]), 1.0 / float(self.inv_tps[i])

    def samples(self, dep_id: str) -> int:
        stat = self._stats.get(dep_id)
        return stat.samples if stat else 0

    def in_flight(self, dep_id: str) -> int:
        stat = self._stats.get(dep_id)
        return stat.in_flight if stat else 0

    def started(self, dep_id: str) -> None:
        """An attempt at ``dep_id`` is now in flight."""
        self._stat(dep_id).in_flight += 1
        self._refresh(dep_id)

    def finished(
        self,
        dep_id: str,
        *,
        ok: bool,
        total_s: float | None = None,
        ttft_s: float | None = None,
        output_tokens: int = 0,
    ) -> None:
        """An attempt ended. Successful ones update the EWMAs (see the module docstring)."""
        stat = self._stat(dep_id)
        stat.in_flight = max(0, stat.in_flight - 1)
        if ok and total_s is not None and total_s > 0:
            self._learn(dep_id, stat, total_s, ttft_s, output_tokens)
        self._refresh(dep_id)

    def _learn(
        self, dep_id: str, stat: _Stat, total_s: float, ttft_s: float | None, n_out: int
    ) -> None:
        table = self._table
        if table is None or dep_id not in table.index:
            return
        i = table.index[dep_id]
        # Current beliefs without the queueing factor.
        w = stat.samples / (stat.samples + self.prior_weight) if stat.samples else 0.0
        ttft_now = (1 - w) * float(table.ttft_s[i]) + w * stat.ttft_s
        static_tps = 1.0 / float(table.inv_tps[i])
        tps_now = (1 - w) * static_tps + w * stat.tps if stat.samples else static_tps
        if ttft_s is not None and 0 < ttft_s <= total_s:
            obs_ttft = ttft_s
            decode_s = total_s - ttft_s
            obs_tps = (n_out - 1) / decode_s if n_out > 1 and decode_s > 0 else tps_now
        else:
            predicted = ttft_now + n_out / tps_now
            scale = total_s / predicted if predicted > 0 else 1.0
            obs_ttft = ttft_now * scale
            obs_tps = tps_now / scale
        if stat.samples == 0:
            stat.ttft_s, stat.tps = obs_ttft, obs_tps
        else:
            a = self.alpha
            stat.ttft_s += a * (obs_ttft - stat.ttft_s)
            stat.tps += a * (obs_tps - stat.tps)
        stat.samples += 1


class OutputPriors:
    """Expected output tokens per task category: config priors refined by observed answers."""

    def __init__(
        self, priors: Mapping[str, int], alpha: float = 0.1, prior_weight: float = 20.0
    ) -> None:
        self.alpha = alpha
        self.prior_weight = prior_weight
        self._config: dict[str, float] = {k: float(v) for k, v in priors.items()}
        self._ewma: dict[str, float] = {}
        self._n: dict[str, int] = {}
        self.current: dict[str, float] = dict(self._config)

    def configure(self, priors: Mapping[str, int]) -> None:
        """New config priors (a reload); observations so far are kept."""
        self._config = {k: float(v) for k, v in priors.items()}
        for category in self._config:
            self._update(category)

    def _update(self, category: str) -> None:
        base = self._config.get(category, self._config.get("chat", 200.0))
        n = self._n.get(category, 0)
        if not n:
            self.current[category] = base
            return
        w = n / (n + self.prior_weight)
        self.current[category] = (1 - w) * base + w * self._ewma[category]

    def observe(self, category: str, output_tokens: int) -> None:
        """An answer to a request of ``category`` that had no ``max_tokens`` was this long."""
        if output_tokens <= 0:
            return
        n = self._n.get(category, 0)
        if n == 0:
            self._ewma[category] = float(output_tokens)
        else:
            self._ewma[category] += self.alpha * (output_tokens - self._ewma[category])
        self._n[category] = n + 1
        self._update(category)
