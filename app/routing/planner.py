"""The routing decision: constraints → Pareto frontier → utility → an ordered, explained plan.

:func:`plan_route` is pure (no I/O, no clocks, no globals) and needs no HTTP app: give it a
:class:`CatalogTable`, the request's :class:`Features` and a :class:`ResolvedPolicy`.

1. **Constraints.** A deployment is excluded (first failing reason wins) when its model is
   not allowed by the policy (``excluded:model_not_in_policy``), it is unavailable
   (``excluded:unhealthy``), it lacks a required capability (``excluded:no_<capability>``),
   the context window cannot hold input + expected output (``excluded:context_window``), or
   its quality, estimated cost or latency misses the floor or a ceiling
   (``excluded:quality_floor`` / ``excluded:max_cost`` / ``excluded:max_latency``).
2. **Utility.** ``U = q − λ_cost·c − λ_latency·l`` with ``c = (n_in − n_cached)·p_fresh +
   n_cached·p_cached + n_out·p_out`` and ``l = TTFT + n_out / decode_tps`` (live estimates
   when given). Cached input only applies to a session's sticky deployment
   (:class:`app.routing.sticky.Sticky`: its expected cached prefix is priced at the
   cached-input price); batch discounts do not apply to online chat completions.
   ``p_fresh`` is the input price, or the cache-write price where the gateway marks the
   prompt for the provider's cache (an Anthropic deployment under the policy's or its own
   ``prompt_cache``, for a prompt of at least its ``prompt_cache_min_tokens``): its
   breakpoints end at the last message, so every input token not read from the cache is
   written to it (:meth:`CatalogTable.write_surcharge`, one look-up per request).
3. **Pareto.** Dominated deployments (q ≥, c ≤, l ≤, one strict) are never chosen.
4. **Plan.** The highest-utility non-dominated deployment first, then the same model at
   other providers, then the rest of the frontier by utility, then dominated feasible ones,
   up to ``1 + max_fallbacks`` entries.

When nothing is feasible: if only health excluded the rest, the unhealthy ones are planned
anyway (their open breakers make the walk answer a retryable 503); with ``best_effort`` the
floor and ceilings are dropped (hard requirements stay); otherwise
:class:`NoFeasibleDeploymentError` (400) names which constraint excluded which deployment.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass

import numpy as np

from app.errors import NoFeasibleDeploymentError
from app.routing.features import Features
from app.routing.pareto import dominates, frontier
from app.routing.plan import (
    BEST_EFFORT,
    CHOSEN,
    NEXT_BEST,
    NEXT_BEST_DOMINATED,
    SAME_MODEL,
    Candidate,
    PlanEntry,
    RoutePlan,
)
from app.routing.policy import ResolvedPolicy
from app.routing.quality import QualityEstimator
from app.routing.sticky import Sticky, StickyOutcome, SwitchReason
from app.routing.table import BoolArray, CatalogTable, FloatArray, IntArray, Surcharge

_NO_IDS: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class LiveView:
    """Live estimates aligned with the table: its ``[p_in, p_out, ttft, 1/tps]`` matrix with
    the TTFT and 1/decode-speed columns replaced by live figures."""

    matrix: FloatArray

    @property
    def ttft_s(self) -> FloatArray:
        return self.matrix[:, 2]

    @property
    def inv_tps(self) -> FloatArray:
        return self.matrix[:, 3]


def _read_saving(table: CatalogTable, i: int, surcharge: Surcharge | None) -> float:
    """USD saved per input token deployment ``i`` reads from its cache instead of taking
    fresh: the input price (plus the write surcharge, when fresh input is written) minus the
    cached-input price."""
    extra = surcharge[1][i] if surcharge is not None else 0.0
    return table.price_input_list[i] + extra - table.price_cached_list[i]


def _sticky_saving(
    table: CatalogTable,
    features: Features,
    sticky: Sticky | None,
    surcharge: Surcharge | None = None,
) -> tuple[int, float]:
    """(index, USD saved) of the sticky deployment's cached prefix, or (-1, 0)."""
    if sticky is None or sticky.cached_input_tokens <= 0:
        return -1, 0.0
    i = table.index.get(sticky.deployment_id)
    if i is None:
        return -1, 0.0
    cached = min(sticky.cached_input_tokens, features.input_tokens)
    return i, cached * _read_saving(table, i, surcharge)


def estimate_arrays(
    table: CatalogTable,
    features: Features,
    live: LiveView | None = None,
    sticky: Sticky | None = None,
    prompt_cache: bool | None = None,
) -> tuple[FloatArray, FloatArray]:
    """Estimated cost (USD) and latency (s) of every deployment for this request
    (``prompt_cache``: the policy's setting, see the module docstring)."""
    n_in, n_out = features.input_tokens, features.output_tokens
    matrix = table.matrix if live is None else live.matrix
    cost = matrix[:, 0] * n_in + matrix[:, 1] * n_out
    surcharge = table.write_surcharge(prompt_cache, n_in)
    if surcharge is not None:
        cost += surcharge[0] * n_in
    i, saving = _sticky_saving(table, features, sticky, surcharge)
    if i >= 0:
        cost[i] -= saving
    latency = matrix[:, 2] + n_out * matrix[:, 3]
    return cost, latency


def _masks(
    table: CatalogTable,
    features: Features,
    policy: ResolvedPolicy,
    quality: FloatArray,
    cost: FloatArray | None,
    latency: FloatArray | None,
    unavailable: Collection[str],
) -> tuple[BoolArray, BoolArray]:
    """(hard, soft) feasibility: hard = model/health/capability/context, soft = floor/ceilings.

    ``cost`` / ``latency`` are only read when the policy sets the matching ceiling.
    """
    hard = table.static_mask(features.requirements, policy.models) & (
        table.context_window >= features.required_context
    )
    if unavailable:
        for dep_id in unavailable:
            i = table.index.get(dep_id)
            if i is not None:
                hard[i] = False
    soft = quality >= policy.quality_floor
    if policy.max_cost_usd is not None and cost is not None:
        soft &= cost <= policy.max_cost_usd
    if policy.max_latency_s is not None and latency is not None:
        soft &= latency <= policy.max_latency_s
    return hard, soft


def _feasible(
    table: CatalogTable,
    features: Features,
    policy: ResolvedPolicy,
    quality: FloatArray,
    catalog_quality: bool,
    cost: FloatArray | None,
    latency: FloatArray | None,
    unavailable: Collection[str],
) -> tuple[IntArray, FloatArray]:
    """Indexes of the deployments that pass every constraint (ascending), and minus their
    quality. Without ceilings or unhealthy deployments, and with the catalog's quality
    (``catalog_quality``), that is a memoised look-up (:meth:`CatalogTable.feasible`);
    otherwise the masks are built."""
    if (
        catalog_quality
        and policy.max_cost_usd is None
        and policy.max_latency_s is None
        and not unavailable
    ):
        return table.feasible(
            features.requirements,
            policy.models,
            features.category,
            policy.quality_floor,
            features.input_tokens + features.output_tokens,  # required_context
        )
    hard, soft = _masks(table, features, policy, quality, cost, latency, unavailable)
    idx = (hard & soft).nonzero()[0]
    return idx, -quality[idx]


def exclusion(
    table: CatalogTable,
    i: int,
    features: Features,
    policy: ResolvedPolicy,
    q: float,
    c: float,
    lat: float,
    unavailable: Collection[str],
) -> str | None:
    """The first constraint deployment ``i`` fails, as ``excluded:<reason>``, or None."""
    dep = table.deployments[i]
    if policy.models is not None and dep.model.name not in policy.models:
        return "excluded:model_not_in_policy"
    if dep.id in unavailable:
        return "excluded:unhealthy"
    for cap in sorted(features.requirements):
        if cap not in dep.capabilities:
            return f"excluded:no_{cap}"
    if dep.context_window < features.required_context:
        return "excluded:context_window"
    if q < policy.quality_floor:
        return "excluded:quality_floor"
    if policy.max_cost_usd is not None and c > policy.max_cost_usd:
        return "excluded:max_cost"
    if policy.max_latency_s is not None and lat > policy.max_latency_s:
        return "excluded:max_latency"
    return None


def _no_feasible(
    table: CatalogTable,
    features: Features,
    policy: ResolvedPolicy,
    quality: list[float],
    cost: list[float],
    latency: list[float],
    unavailable: Collection[str],
) -> NoFeasibleDeploymentError:
    groups: dict[str, list[str]] = {}
    for i, dep in enumerate(table.deployments):
        reason = exclusion(table, i, features, policy, quality[i], cost[i], latency[i], unavailable)
        if reason is None:  # pragma: no cover - only called when nothing is feasible
            continue
        key = reason.removeprefix("excluded:")
        if key == "quality_floor":
            label = f"{dep.id} (q {quality[i]:g})"
        elif key == "max_cost":
            label = f"{dep.id} (${cost[i]:.6f})"
        elif key == "max_latency":
            label = f"{dep.id} ({latency[i] * 1000:.0f} ms)"
        elif key == "context_window":
            label = f"{dep.id} ({dep.context_window} tokens)"
        else:
            label = dep.id
        groups.setdefault(key, []).append(label)
    what = {
        "model_not_in_policy": f"not in policy {policy.name!r}'s models",
        "unhealthy": "unhealthy (circuit open)",
        "context_window": f"context window below the {features.required_context} tokens needed "
        f"({features.input_tokens} in + {features.output_tokens} out)",
        "quality_floor": f"quality floor {policy.quality_floor:g} ({policy.floor_source})",
        "max_cost": f"max cost ${policy.max_cost_usd}",
        "max_latency": f"max latency {(policy.max_latency_s or 0) * 1000:g} ms",
    }
    parts = []
    for key, names in groups.items():
        label = what.get(key, f"no '{key.removeprefix('no_')}' capability")
        shown = ", ".join(names[:6]) + (f" and {len(names) - 6} more" if len(names) > 6 else "")
        parts.append(f"{label} excluded {shown}")
    if not table.deployments:
        parts.append("the catalog has no enabled deployment")
    hint = (
        "lower the floor (x-pareto-quality-floor), raise the ceilings "
        "(x-pareto-max-cost-usd, x-pareto-max-latency-ms), or use a policy with best_effort"
    )
    return NoFeasibleDeploymentError(
        f"no deployment can serve this request under policy {policy.name!r}: "
        + "; ".join(parts)
        + f". To route anyway: {hint}",
        param="model",
    )


def plan_route(
    table: CatalogTable,
    features: Features,
    policy: ResolvedPolicy,
    *,
    live: LiveView | None = None,
    unavailable: Collection[str] = _NO_IDS,
    quality: QualityEstimator | None = None,
    sticky: Sticky | None = None,
    explain: bool = False,
) -> RoutePlan:
    """The ordered plan for one request (see the module docstring).

    ``unavailable``: deployment ids to exclude as ``excluded:unhealthy`` (e.g. open circuit
    breakers). ``quality``: per-deployment quality predictor (default: catalog scores for the
    request's category). ``sticky``: a session's deployment whose cached prefix is priced at
    the cached-input price. ``explain``: also fill ``plan.candidates`` with one row per
    deployment. Raises :class:`NoFeasibleDeploymentError` when nothing can serve and the
    policy is not best effort.

    Hot path: one mat-vec gives every utility, a memoised look-up gives feasibility; when the
    best deployment stands alone and its model fills the fallbacks, an argmax settles the plan
    (:func:`_settled_by_the_best`), otherwise one sort orders the feasible ones for
    :func:`_walk`. Costs and latencies are computed only for the deployments the plan walks
    through (the explain and error paths compute them all).
    """
    catalog_q = table.quality_for(features.category)
    q_arr = catalog_q if quality is None else quality.estimate(table, features)
    n_in, n_out = features.input_tokens, features.output_tokens
    lc, ll = policy.lambda_cost, policy.lambda_latency
    matrix = table.matrix if live is None else live.matrix
    utility = q_arr - matrix.dot(np.array((lc * n_in, lc * n_out, ll, ll * n_out)))
    surcharge = table.write_surcharge(policy.prompt_cache, n_in)
    if surcharge is not None:  # deployments that write the prompt to their cache
        utility -= surcharge[0] * (lc * n_in)
    sticky_i, saving = (
        (-1, 0.0) if sticky is None else _sticky_saving(table, features, sticky, surcharge)
    )
    if sticky_i >= 0:
        utility[sticky_i] += lc * saving
    ceilings = policy.max_cost_usd is not None or policy.max_latency_s is not None
    cost = latency = None
    if ceilings or explain:
        cost, latency = estimate_arrays(table, features, live, sticky, policy.prompt_cache)
    feasible_idx, neg_q = _feasible(
        table, features, policy, q_arr, q_arr is catalog_q, cost, latency, unavailable
    )
    best_effort = False
    if not feasible_idx.size:
        hard, soft = _masks(table, features, policy, q_arr, cost, latency, _NO_IDS)
        if unavailable:
            # Every deployment that could serve is unhealthy: plan them anyway, so the walk
            # answers with its retryable 503 (circuit_open), not a 4xx about the request.
            feasible_idx = (hard & soft).nonzero()[0]
            if feasible_idx.size:
                unavailable = _NO_IDS
        if not feasible_idx.size:
            if policy.best_effort and hard.any():
                feasible_idx, best_effort = hard.nonzero()[0], True
            else:
                if cost is None or latency is None:
                    cost, latency = estimate_arrays(
                        table, features, live, sticky, policy.prompt_cache
                    )
                raise _no_feasible(
                    table,
                    features,
                    policy,
                    q_arr.tolist(),
                    cost.tolist(),
                    latency.tolist(),
                    unavailable,
                )
        neg_q = -q_arr[feasible_idx]
    n_feasible = len(feasible_idx)
    everyone = n_feasible == len(table.ids)  # common with low floors: no gathers needed
    u_feasible = utility if everyone else utility[feasible_idx]
    limit = 1 + policy.max_fallbacks
    q_list = table.quality_list(features.category) if q_arr is catalog_q else q_arr.tolist()

    # q, c, l of the planned and walked deployments in plain floats, computed on first use.
    p_in, p_out = table.price_input_list, table.price_output_list
    extra = surcharge[1] if surcharge is not None else None
    known: dict[int, tuple[float, float, float]] = {}

    def numbers(i: int) -> tuple[float, float, float]:
        got = known.get(i)
        if got is None:
            c = p_in[i] * n_in + p_out[i] * n_out
            if extra is not None:
                c += extra[i] * n_in
            if i == sticky_i:
                c -= saving
            got = known[i] = (q_list[i], c, matrix.item(i, 2) + n_out * matrix.item(i, 3))
        return got

    first = BEST_EFFORT if best_effort else CHOSEN
    picks = _settled_by_the_best(table, utility, u_feasible, feasible_idx, q_list, limit, first)
    if picks is None:
        picks = _walk(table, u_feasible, feasible_idx, neg_q, limit, first, numbers)
    deployments = table.deployments
    entries = []
    for i, reason in picks:
        q, c, lat = numbers(i)
        entries.append(PlanEntry(deployments[i], reason, c, lat, utility.item(i), q))

    plan = RoutePlan(
        entries=entries,
        policy=policy.name,
        quality_floor=policy.quality_floor,
        features=features,
        resolved=policy,
        feasible=n_feasible,
        best_effort=best_effort,
    )
    feasible: BoolArray | None = None
    if sticky is not None or explain:
        if cost is None or latency is None:
            cost, latency = estimate_arrays(table, features, live, sticky, policy.prompt_cache)
        feasible = np.zeros(len(table), dtype=np.bool_)
        feasible[feasible_idx] = True
    if sticky is not None:
        assert cost is not None and latency is not None and feasible is not None
        plan.sticky = _sticky_outcome(
            table,
            sticky,
            features,
            policy,
            plan,
            q_arr,
            cost,
            latency,
            utility,
            feasible,
            unavailable,
        )
    if explain:
        assert cost is not None and latency is not None and feasible is not None
        plan.candidates = _candidates(
            table, features, policy, q_arr, cost, latency, utility, feasible, plan, unavailable
        )
    return plan


def _settled_by_the_best(
    table: CatalogTable,
    utility: FloatArray,
    u_feasible: FloatArray,
    feasible_idx: IntArray,
    quality: list[float],
    limit: int,
    first: str,
) -> list[tuple[int, str]] | None:
    """The plan without sorting every feasible deployment, when that is already settled; else
    None (then :func:`_walk` decides).

    Settled means: the best utility stands alone (no other feasible deployment within the
    rounding tolerance, so none can dominate it, see :mod:`app.routing.pareto`), and its
    model's other feasible deployments fill every fallback slot. The plan is then the best one
    and those, by falling utility (ties: higher quality, then catalog order) — exactly what
    the walk gives, for the price of an argmax.
    """
    top = int(u_feasible.argmax())
    best = u_feasible.item(top)
    tol = 1e-9 * (1.0 + abs(best))
    if best != best or np.count_nonzero(u_feasible >= best - tol) != 1:
        return None  # NaN, or near-ties that need the dominance check
    everyone = len(feasible_idx) == len(table.ids)
    chosen = top if everyone else feasible_idx.item(top)
    if limit == 1:
        return [(chosen, first)]
    same = [i for i in table.same_model[chosen] if i != chosen]
    if same and not everyone:
        members = set(feasible_idx.tolist())
        same = [i for i in same if i in members]
    if len(same) < limit - 1:
        return None  # the walk goes on to other models
    keyed = sorted((-utility.item(i), -quality[i], i) for i in same)
    if any(key[0] != key[0] for key in keyed):
        return None  # NaN: leave the order to the full sort
    return [(chosen, first), *((i, SAME_MODEL) for _, _, i in keyed[: limit - 1])]


def _walk(
    table: CatalogTable,
    u_feasible: FloatArray,
    feasible_idx: IntArray,
    neg_q: FloatArray,
    limit: int,
    first: str,
    numbers: Callable[[int], tuple[float, float, float]],
) -> list[tuple[int, str]]:
    """The plan by walking every feasible deployment in order (see the module docstring):
    highest utility first (among exact ties the higher quality first, so raising the floor can
    never pick a lower quality, then catalog order); the first one nothing dominates; the same
    model at other providers; the rest of the frontier; then dominated ones."""
    everyone = len(feasible_idx) == len(table.ids)
    ranked = np.lexsort((neg_q, -u_feasible))
    order: list[int] = (ranked if everyone else feasible_idx[ranked]).tolist()
    u: list[float] = u_feasible[ranked].tolist()
    n_feasible = len(order)

    def dominator(k: int) -> int | None:
        # Dominators have a utility >= (up to rounding): those before k, or tied after it.
        uk = u[k]
        tol = 1e-9 * (1.0 + abs(uk))
        qk, ck, lk = numbers(order[k])
        for j in range(n_feasible):
            if j > k and u[j] < uk - tol:
                break
            if j != k and dominates(*numbers(order[j]), qk, ck, lk):
                return j
        return None

    dominated: set[int] = set()
    chosen = 0
    for k in range(n_feasible):
        if dominator(k) is None:
            chosen = k
            break
        dominated.add(k)
    picks = [(order[chosen], first)]
    if limit > 1:
        taken = {chosen}
        same = table.same_model[order[chosen]]
        if len(same) > 1:
            # Plan positions of the model's feasible deployments, ascending (list.index is a
            # C-speed scan; when everyone is feasible, every one of them is in the order).
            if everyone:
                positions = sorted(map(order.index, same))
            else:
                positions = [k for k, i in enumerate(order) if i in same]
            for k in positions:
                if len(picks) >= limit:
                    break
                if k not in taken:
                    picks.append((order[k], SAME_MODEL))
                    taken.add(k)
        tail: list[int] = []
        for k in range(n_feasible):
            if len(picks) >= limit:
                break
            if k in taken:
                continue
            if k in dominated or dominator(k) is not None:
                tail.append(k)
                continue
            picks.append((order[k], NEXT_BEST))
            taken.add(k)
        for k in tail:
            if len(picks) >= limit:
                break
            picks.append((order[k], NEXT_BEST_DOMINATED))
    return picks


def _sticky_outcome(
    table: CatalogTable,
    sticky: Sticky,
    features: Features,
    policy: ResolvedPolicy,
    plan: RoutePlan,
    q_arr: FloatArray,
    cost: FloatArray,
    latency: FloatArray,
    utility: FloatArray,
    feasible: BoolArray,
    unavailable: Collection[str],
) -> StickyOutcome:
    """Whether the session's deployment leads the plan, and if not, why it lost.

    Its cost was already priced warm (:func:`estimate_arrays`), so losing on utility means
    another deployment beats it by more than the warm cache is worth (``cache_value``).
    """
    sid = sticky.deployment_id
    i = table.index.get(sid)
    if i is None:  # removed from the catalog, disabled, or its key unset
        return StickyOutcome(sid, kept=False, switch_reason="infeasible")
    cached = min(sticky.cached_input_tokens, features.input_tokens)
    surcharge = table.write_surcharge(policy.prompt_cache, features.input_tokens)
    cache_value = policy.lambda_cost * cached * _read_saving(table, i, surcharge)
    primary = plan.entries[0]
    if primary.deployment.id == sid:
        return StickyOutcome(sid, kept=True, cache_value=cache_value)
    if not bool(feasible[i]):
        why = exclusion(
            table,
            i,
            features,
            policy,
            float(q_arr[i]),
            float(cost[i]),
            float(latency[i]),
            unavailable,
        )
        reason: SwitchReason = "unhealthy" if why == "excluded:unhealthy" else "infeasible"
        return StickyOutcome(sid, kept=False, switch_reason=reason, cache_value=cache_value)
    margin = (primary.utility if primary.utility is not None else 0.0) - float(utility[i])
    return StickyOutcome(
        sid, kept=False, switch_reason="better_utility", cache_value=cache_value, margin=margin
    )


def _candidates(
    table: CatalogTable,
    features: Features,
    policy: ResolvedPolicy,
    q_arr: FloatArray,
    cost: FloatArray,
    latency: FloatArray,
    utility: FloatArray,
    feasible: BoolArray,
    plan: RoutePlan,
    unavailable: Collection[str],
) -> list[Candidate]:
    q, c, lat, u = q_arr.tolist(), cost.tolist(), latency.tolist(), utility.tolist()
    ok = feasible.tolist()
    feas_idx = [i for i in range(len(table)) if ok[i]]
    on_frontier = frontier(
        [q[i] for i in feas_idx], [c[i] for i in feas_idx], [lat[i] for i in feas_idx]
    )
    front = {i for i, f in zip(feas_idx, on_frontier, strict=True) if f}
    in_plan = {e.deployment.id: n for n, e in enumerate(plan.entries)}
    sticky = plan.sticky.deployment if plan.sticky is not None else None
    rows: list[Candidate] = []
    for i, dep in enumerate(table.deployments):
        detail: str | None = None
        if dep.id in in_plan:
            n = in_plan[dep.id]
            status = "chosen" if n == 0 else "fallback"
            detail = plan.entries[n].reason
        elif ok[i]:
            if i in front:
                status, detail = "feasible", "on the frontier, past max_fallbacks"
            else:
                status = "dominated"
                by = sorted(
                    (c[j], table.ids[j])
                    for j in front
                    if c[j] <= c[i] and lat[j] <= lat[i] and q[j] >= q[i]
                )
                detail = "by " + ", ".join(name for _, name in by[:3]) if by else None
        else:
            status = (
                exclusion(table, i, features, policy, q[i], c[i], lat[i], unavailable)
                or "excluded:best_effort"
            )
        rows.append(
            Candidate(
                dep.id, dep.model.name, q[i], c[i], lat[i], u[i], status, detail, dep.id == sticky
            )
        )
    rows.sort(key=lambda r: (_rank(r.status), -r.utility))
    return rows


def _rank(status: str) -> int:
    return {"chosen": 0, "fallback": 1, "feasible": 2, "dominated": 3}.get(status, 4)
