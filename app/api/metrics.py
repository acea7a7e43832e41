"""``GET /metrics``: Prometheus exposition, merged across workers in multiprocess mode."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import Response

from app.telemetry.metrics import Metrics

router = APIRouter()


@router.get("/metrics", include_in_schema=False)
async def metrics(request: Request) -> Response:
    """Every gateway metric (see app/telemetry/metrics.py for names and labels)."""
    registry: Metrics = request.app.state.metrics
    body, content_type = registry.render()
    return Response(body, media_type=content_type)
