"""Routing: pure code (no I/O) from a request to an ordered, explained plan of deployments.

Use without the HTTP app::

    from app.catalog import load_catalog
    from app.routing import Router

    router = Router(load_catalog("config/demo.yaml"))
    plan = router.route(router.table.catalog, body, headers={}, explain=True)
    plan.explain()  # the POST /v1/route body

or the pieces: :func:`extract_features` → :func:`resolve_policy` → :func:`plan_route`.
"""

from app.routing.features import Features, extract_features
from app.routing.live import LiveEstimates, OutputPriors
from app.routing.overrides import Overrides, parse_overrides
from app.routing.plan import Candidate, PlanEntry, RoutePlan
from app.routing.planner import LiveView, estimate_arrays, plan_route
from app.routing.policy import ResolvedPolicy, resolve_policy
from app.routing.quality import CatalogQuality, QualityEstimator
from app.routing.router import Router
from app.routing.sticky import Sticky
from app.routing.table import CatalogTable

__all__ = [
    "Candidate",
    "CatalogQuality",
    "CatalogTable",
    "Features",
    "LiveEstimates",
    "LiveView",
    "OutputPriors",
    "Overrides",
    "PlanEntry",
    "QualityEstimator",
    "ResolvedPolicy",
    "RoutePlan",
    "Router",
    "Sticky",
    "estimate_arrays",
    "extract_features",
    "parse_overrides",
    "plan_route",
    "resolve_policy",
]
