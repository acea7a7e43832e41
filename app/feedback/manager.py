"""The gateway's feedback layer: remember a served request, take a score for it later.

When a request has been served, :meth:`Feedback.remember` stores, under its request id, the
served model and deployment, the policy, the routing heuristic's features, the learned
router's hashed n-gram features (``app/routing/learned.py``; the prompt text itself is not
kept) and the client's ``pareto.user_id`` / ``pareto.tags`` when sent
(:mod:`app.telemetry.attribution`). ``POST /v1/feedback`` with ``{"request_id", "score"}``
turns that into one line of the feedback log, in the format ``pareto train`` reads.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from typing import Any

import orjson

from app.errors import FeedbackDisabledError, InvalidRequestError, RequestNotFoundError
from app.feedback.recent import RecentRequests
from app.feedback.store import FeedbackLog
from app.routing.learned import DEFAULT_DIM, featurize


class Feedback:
    """Off when built with ``recent=None`` (then :meth:`remember` costs nothing)."""

    def __init__(
        self, recent: RecentRequests | None, log: FeedbackLog | None, dim: int = DEFAULT_DIM
    ) -> None:
        self.recent = recent
        self.log = log
        self.dim = dim
        self._words: dict[str, int] = {}

    @property
    def enabled(self) -> bool:
        return self.recent is not None and self.log is not None

    async def remember(
        self,
        request_id: str,
        body: Mapping[str, Any],
        *,
        model: str,
        deployment: str,
        policy: str | None,
        features: Any = None,
        user_id: str | None = None,
        tags: dict[str, str] | list[str] | None = None,
    ) -> None:
        """Keep what a later score needs (called once the request has been served), and the
        client's attribution (``pareto.user_id`` / ``pareto.tags``) when it sent one."""
        if self.recent is None:
            return
        hashed = featurize(body.get("messages") or [], self.dim, self._words)
        heuristic = features.to_dict() if hasattr(features, "to_dict") else None
        entry = {
            "model": model,
            "deployment": deployment,
            "policy": policy,
            "features": heuristic,
            "hashed": {
                "dim": self.dim,
                "indices": hashed.indices.tolist(),
                "values": [round(v, 6) for v in hashed.values.tolist()],
            },
        }
        if user_id is not None:
            entry["user_id"] = user_id
        if tags is not None:
            entry["tags"] = tags
        await self.recent.put(request_id, orjson.dumps(entry))

    async def submit(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """Validate ``{"request_id", "score"}``, append the record, return a receipt."""
        if self.recent is None or self.log is None:
            raise FeedbackDisabledError(
                "feedback is not enabled on this gateway; the operator sets PARETO_FEEDBACK_PATH "
                "to the JSONL file feedback is stored in"
            )
        request_id = body.get("request_id")
        if not isinstance(request_id, str) or not request_id:
            raise InvalidRequestError(
                "request_id must be the x-request-id of a chat completion this gateway served",
                param="request_id",
            )
        score = body.get("score")
        if (
            isinstance(score, bool)
            or not isinstance(score, int | float)
            or not (math.isfinite(score) and 0.0 <= score <= 1.0)
        ):
            raise InvalidRequestError(
                f"score must be a number from 0 (bad answer) to 1 (good answer), got {score!r}",
                param="score",
            )
        raw = await self.recent.get(request_id)
        if raw is None:
            raise RequestNotFoundError(
                f"no recent request with id {request_id!r}: feedback is accepted for requests "
                "this gateway served within PARETO_FEEDBACK_TTL_S (and among the last "
                "PARETO_FEEDBACK_WINDOW in memory)",
                param="request_id",
            )
        entry = orjson.loads(raw)
        record = {"request_id": request_id, "ts": time.time(), "score": float(score), **entry}
        await self.log.append(record)
        return {
            "object": "feedback",
            "request_id": request_id,
            "model": entry["model"],
            "score": float(score),
            "stored": True,
        }
