"""Per-request quality estimates: pluggable, catalog scores by default.

A :class:`QualityEstimator` returns one number per deployment of a :class:`CatalogTable`, on
the catalog's 0-100 scale, for one request's :class:`Features`. The default,
:class:`CatalogQuality`, is the model's ``quality_by_category`` for the request's category
(overall quality when the model has no score for it). A learned router plugs in by
implementing ``estimate`` — typically predicting per model and expanding with
``table.expand_models({model_name: score})`` — and passing it to ``Router(quality=...)`` or
``plan_route(..., quality=...)``.
"""

from __future__ import annotations

from typing import Protocol

from app.routing.features import Features
from app.routing.table import CatalogTable, FloatArray


class QualityEstimator(Protocol):
    """Predicts each deployment's answer quality (0-100) for one request."""

    def estimate(self, table: CatalogTable, features: Features) -> FloatArray:
        """An array of ``len(table)`` floats aligned with ``table.deployments``."""
        ...


class CatalogQuality:
    """The catalog's quality for the request's task category (precomputed per catalog)."""

    def estimate(self, table: CatalogTable, features: Features) -> FloatArray:
        return table.quality_for(features.category)
