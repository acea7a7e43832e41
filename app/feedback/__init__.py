"""Feedback: remember recent requests' features, accept ``POST /v1/feedback`` scores, and
append (features, served model, score) records that ``pareto train`` reads."""

from __future__ import annotations

from typing import Any

from app.feedback.manager import Feedback
from app.feedback.recent import MemoryRecent, RecentRequests, RedisRecent
from app.feedback.store import FeedbackLog
from app.settings import Settings


def build_feedback(settings: Settings, redis: Any) -> Feedback:
    """Off unless ``PARETO_FEEDBACK_PATH`` is set; recent requests in Redis when configured."""
    if settings.feedback_path is None:
        return Feedback(None, None)
    local = MemoryRecent(settings.feedback_window, settings.feedback_ttl_s)
    recent: RecentRequests = local
    if redis is not None:
        recent = RedisRecent(
            redis,
            ttl_s=settings.feedback_ttl_s,
            prefix=settings.feedback_key_prefix,
            timeout_s=settings.redis_timeout_s,
            local=local,
        )
    return Feedback(recent, FeedbackLog(settings.feedback_path), dim=settings.feedback_dim)


__all__ = ["Feedback", "FeedbackLog", "MemoryRecent", "RecentRequests", "RedisRecent"]
