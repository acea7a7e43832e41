"""Run the gateway's real routing code (features → policy → plan) on dataset rows.

The dataset's model table becomes a catalog: one deployment per model at the table's prices,
every model with the same speed, context window and capabilities (the data has no latency, so
latency does not tell models apart), and quality = 100 × the model's mean score (what a
catalog's benchmark score is). The policy and the content heuristic's rules (quality floors
per category and difficulty, output-token priors) are the shipped ``config/policies.yaml``
ones; the policy is made best-effort so a floor never leaves a row unrouted. ``λ_cost`` is
set per decision through the same override a client sends (``x-pareto-lambda-cost``).

A learned scorer plugs in exactly as in the gateway: as the plan's per-model quality ``q``.
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import yaml

from app.catalog import load_catalog
from app.catalog.model import Catalog
from app.evaluation.dataset import Dataset
from app.routing.features import Features
from app.routing.overrides import Overrides
from app.routing.planner import plan_route
from app.routing.router import Router
from app.routing.table import CatalogTable, FloatArray

DEFAULT_POLICIES = Path(__file__).resolve().parents[2] / "config" / "policies.yaml"
_KEEP = {
    "description",
    "lambda_cost",
    "lambda_latency",
    "quality_floor",
    "max_cost_usd",
    "max_latency_ms",
    "models",
}


def catalog_config(
    dataset: Dataset,
    quality: Mapping[str, float],
    policies_file: Path = DEFAULT_POLICIES,
    policy: str = "auto",
    floor: str | None = None,
) -> dict[str, Any]:
    """The config dict of a dataset's catalog and one policy named ``eval``.

    ``floor``: ``None`` keeps the policy's floor, ``"none"`` removes it, a number sets it.
    """
    shipped = yaml.safe_load(policies_file.read_text(encoding="utf-8")) or {}
    base = dict((shipped.get("policies") or {}).get(policy) or {})
    if not base:
        raise ValueError(f"{policies_file}: no policy {policy!r}")
    spec: dict[str, Any] = {k: v for k, v in base.items() if k in _KEEP}
    spec.pop("models", None)
    if floor == "none":
        spec["quality_floor"] = None
    elif floor is not None:
        spec["quality_floor"] = float(floor)
    spec.update(best_effort=True, max_fallbacks=0)
    spec["description"] = f"{policy} from {policies_file.name}, best effort, λ_cost swept"
    models = {
        m: {
            "quality": round(100.0 * quality[m], 4),
            "context_window": 10_000_000,
            "max_output_tokens": 1_000_000,
            "capabilities": ["tools", "vision", "json"],
        }
        for m in dataset.models
    }
    deployments = {
        f"{m}@{dataset.name}": {
            "model": m,
            "kind": "simulated",
            "price": {"input": p.input_usd_per_mtok, "output": p.output_usd_per_mtok},
            "ttft_s": 0.5,
            "decode_tps": 100.0,
        }
        for m, p in zip(dataset.models, dataset.prices, strict=True)
    }
    config: dict[str, Any] = {
        "models": models,
        "deployments": deployments,
        "policies": {"eval": spec},
        "default_policy": "eval",
        "auth": {"enabled": False},
    }
    if shipped.get("routing") is not None:
        config["routing"] = shipped["routing"]
    return config


def build_catalog(config: dict[str, Any]) -> Catalog:
    """Load a generated config through the gateway's own loader (validation included)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "eval-catalog.yaml"
        path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
        return load_catalog(path, env={})


class RowQuality:
    """A :class:`~app.routing.quality.QualityEstimator` that returns one row's predictions."""

    def __init__(self, columns: tuple[str, ...]) -> None:
        self.columns = columns
        self.current: npt.NDArray[np.float64] = np.zeros(len(columns))

    def estimate(self, table: CatalogTable, features: Features) -> FloatArray:
        """Predicted quality ×100; models without a prediction (NaN) keep catalog quality."""
        predicted = {
            m: 100.0 * float(q)
            for m, q in zip(self.columns, self.current, strict=True)
            if not np.isnan(q)
        }
        known = table.expand_models(predicted, default=np.nan)
        out: FloatArray = np.where(np.isnan(known), table.quality_for(features.category), known)
        return out


class GatewayDecider:
    """``decide(row, λ_cost)``: the model the gateway's router sends a dataset row to."""

    def __init__(
        self,
        name: str,
        dataset: Dataset,
        catalog: Catalog,
        predictions: npt.NDArray[np.float64] | None = None,
    ) -> None:
        self.name = name
        self.catalog = catalog
        self.router = Router(catalog)
        self.table = self.router.table
        self.model_index = {m: i for i, m in enumerate(dataset.models)}
        self.predictions = predictions
        self.quality = RowQuality(dataset.models) if predictions is not None else None
        self.bodies = [{"model": "eval", "messages": list(r.messages)} for r in dataset.rows]
        self._features: dict[int, Features] = {}

    def features(self, row: int) -> Features:
        """The content heuristic's features of a row (computed once, as per request)."""
        f = self._features.get(row)
        if f is None:
            f = self._features[row] = self.router.features(self.bodies[row])
        return f

    def decide(self, row: int, lambda_cost: float) -> int:
        features = self.features(row)
        policy = self.router.resolve(
            self.catalog, "eval", features, Overrides(lambda_cost=lambda_cost)
        )
        if self.quality is not None and self.predictions is not None:
            self.quality.current = self.predictions[row]
        plan = plan_route(self.table, features, policy, quality=self.quality)
        return self.model_index[plan.primary.deployment.model.name]
