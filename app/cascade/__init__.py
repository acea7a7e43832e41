"""Cost cascades: a cheap tier answers first; a stronger tier is paid for only when the
cheap answer fails the acceptance checks (see README, Cost cascades).

Kept apart from reliability failover: a deployment that *errors* inside a tier is failover
(``fallback_reason``); an answer judged *weak* is an escalation (``escalation_reason``).
"""
