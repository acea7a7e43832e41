"""Property tests of the routing decision over random catalogs and requests (hypothesis).

- the chosen deployment is never Pareto-dominated by another feasible one;
- every constraint (capabilities, context window, floor, ceilings, models, health) holds for
  every deployment in the plan;
- raising λ_cost never raises the chosen deployment's estimated cost;
- raising the quality floor never lowers the chosen deployment's quality.

Values are drawn from small grids so that ties and dominance happen often.
"""

from __future__ import annotations

from dataclasses import replace

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from app.catalog.model import Catalog, Deployment, Model
from app.errors import NoFeasibleDeploymentError
from app.routing.features import Features
from app.routing.pareto import dominates
from app.routing.planner import plan_route
from app.routing.policy import ResolvedPolicy
from app.routing.table import CatalogTable

CAPS = ("tools", "vision", "json")


@st.composite
def catalogs(draw: st.DrawFn) -> Catalog:
    n_models = draw(st.integers(1, 5))
    models = {}
    for m in range(n_models):
        models[f"m{m}"] = Model(
            name=f"m{m}",
            quality=draw(st.sampled_from([20, 30, 40, 45, 50, 60])),
            quality_by_category={"code": draw(st.sampled_from([25, 40, 55, 65]))},
            context_window=draw(st.sampled_from([8000, 32000, 200000])),
            max_output_tokens=8192,
            capabilities=frozenset(draw(st.sets(st.sampled_from(CAPS)))),
        )
    deployments = []
    for d in range(draw(st.integers(1, 9))):
        model = models[f"m{draw(st.integers(0, n_models - 1))}"]
        deployments.append(
            Deployment(
                id=f"{model.name}@p{d}",
                model=model,
                provider=f"p{d}",
                kind="simulated",
                base_url=None,
                upstream_model=model.name,
                headers={},
                price_input=draw(st.sampled_from([0.05, 0.15, 1.0, 3.0, 5.0])) * 1e-6,
                price_cached_input=0.01e-6,
                price_output=draw(st.sampled_from([0.1, 0.6, 4.0, 15.0, 25.0])) * 1e-6,
                batch_discount=0.0,
                ttft_s=draw(st.sampled_from([0.2, 0.3, 0.9, 2.0])),
                decode_tps=draw(st.sampled_from([60.0, 140.0, 500.0, 3000.0])),
                context_window=model.context_window,
                capabilities=model.capabilities,
                connect_timeout_s=None,
                first_token_timeout_s=None,
                total_timeout_s=None,
                simulation=None,
            )
        )
    by_model: dict[str, list[Deployment]] = {}
    for dep in deployments:
        by_model.setdefault(dep.model.name, []).append(dep)
    return Catalog(
        source="hypothesis",
        snapshot_date=None,
        models=models,
        deployments=tuple(deployments),
        by_model={k: tuple(v) for k, v in by_model.items()},
        by_id={d.id: d for d in deployments},
        policies={},
        default_policy=None,
        disabled={},
    )


features_st = st.builds(
    Features,
    input_tokens=st.sampled_from([10, 800, 5000, 30000, 150000]),
    output_tokens=st.sampled_from([1, 250, 2000]),
    output_tokens_source=st.just("max_tokens"),
    category=st.sampled_from(["chat", "code"]),
    difficulty=st.just("medium"),
    difficulty_score=st.just(1.0),
    signals=st.just(()),
    language=st.just("en"),
    requirements=st.frozensets(st.sampled_from(CAPS), max_size=2),
    turns=st.just(1),
)


def policy(**kw: object) -> ResolvedPolicy:
    base = ResolvedPolicy(
        name="p",
        lambda_cost=1000.0,
        lambda_latency=1.0,
        quality_floor=0.0,
        floor_source="policy",
        max_cost_usd=None,
        max_latency_s=None,
        best_effort=False,
        models=None,
        max_fallbacks=3,
    )
    return replace(base, **kw)  # type: ignore[arg-type]


policies_st = st.builds(
    policy,
    lambda_cost=st.sampled_from([0.0, 10.0, 1000.0, 20000.0]),
    lambda_latency=st.sampled_from([0.0, 0.2, 1.0, 20.0]),
    quality_floor=st.sampled_from([0.0, 30.0, 45.0, 55.0]),
    max_cost_usd=st.sampled_from([None, 0.001, 0.01]),
    max_latency_s=st.sampled_from([None, 1.0, 5.0]),
)


def numbers(table: CatalogTable, f: Features, i: int) -> tuple[float, float, float]:
    dep = table.deployments[i]
    q = dep.model.quality_for(f.category)
    c = dep.price_input * f.input_tokens + dep.price_output * f.output_tokens
    lat = dep.ttft_s + f.output_tokens / dep.decode_tps
    return q, c, lat


def feasible(table: CatalogTable, f: Features, p: ResolvedPolicy, i: int, down: set[str]) -> bool:
    dep = table.deployments[i]
    q, c, lat = numbers(table, f, i)
    return (
        f.requirements <= dep.capabilities
        and dep.context_window >= f.input_tokens + f.output_tokens
        and dep.id not in down
        and (p.models is None or dep.model.name in p.models)
        and q >= p.quality_floor
        and (p.max_cost_usd is None or c <= p.max_cost_usd)
        and (p.max_latency_s is None or lat <= p.max_latency_s)
    )


SETTINGS = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(catalogs(), features_st, policies_st, st.data())
def test_chosen_is_feasible_and_never_dominated(
    catalog: Catalog, f: Features, p: ResolvedPolicy, data: st.DataObject
) -> None:
    table = CatalogTable(catalog)
    down = set(data.draw(st.sets(st.sampled_from(table.ids))))
    ok = [i for i in range(len(table)) if feasible(table, f, p, i, down)]
    try:
        plan = plan_route(table, f, p, unavailable=frozenset(down))
    except NoFeasibleDeploymentError:
        # Nothing feasible, even ignoring health (then the unhealthy ones would be planned).
        assert not ok
        assert not any(feasible(table, f, p, i, set()) for i in range(len(table)))
        return
    if not ok:  # only unhealthy ones could serve: they are planned for the walk's 503
        assert all(e.deployment.id in down for e in plan.entries)
        return
    for e in plan.entries:  # every constraint respected by every plan entry
        assert feasible(table, f, p, table.index[e.deployment.id], down)
    chosen = table.index[plan.primary.deployment.id]
    qc, cc, lc = numbers(table, f, chosen)
    for j in ok:
        assert not dominates(*numbers(table, f, j), qc, cc, lc), (table.ids[j], table.ids[chosen])
    # and it has the best utility among the feasible
    best = max(
        numbers(table, f, j)[0]
        - p.lambda_cost * numbers(table, f, j)[1]
        - p.lambda_latency * numbers(table, f, j)[2]
        for j in ok
    )
    assert plan.primary.utility is not None
    assert plan.primary.utility >= best - 1e-9 * (1 + abs(best))
    assert len(plan.entries) <= 1 + p.max_fallbacks
    assert len({e.deployment.id for e in plan.entries}) == len(plan.entries)


@SETTINGS
@given(
    catalogs(),
    features_st,
    policies_st,
    st.sampled_from([0.0, 10.0, 1000.0, 5000.0, 20000.0, 1e6]),
    st.sampled_from([10.0, 1000.0, 5000.0, 20000.0, 1e6, 1e8]),
)
def test_raising_lambda_cost_never_raises_chosen_cost(
    catalog: Catalog, f: Features, p: ResolvedPolicy, low: float, extra: float
) -> None:
    table = CatalogTable(catalog)
    try:
        cheap_side = plan_route(table, f, replace(p, lambda_cost=low + extra))
        base = plan_route(table, f, replace(p, lambda_cost=low))
    except NoFeasibleDeploymentError:
        return
    assert cheap_side.primary.est_cost_usd <= base.primary.est_cost_usd * (1 + 1e-9) + 1e-15


@SETTINGS
@given(
    catalogs(),
    features_st,
    policies_st,
    st.sampled_from([0.0, 25.0, 40.0, 50.0]),
    st.sampled_from([1.0, 5.0, 15.0, 30.0]),
)
def test_raising_the_floor_never_lowers_chosen_quality(
    catalog: Catalog, f: Features, p: ResolvedPolicy, floor: float, raise_by: float
) -> None:
    table = CatalogTable(catalog)
    try:
        higher = plan_route(table, f, replace(p, quality_floor=floor + raise_by))
    except NoFeasibleDeploymentError:
        return
    base = plan_route(table, f, replace(p, quality_floor=floor))  # feasible: superset
    assert higher.primary.quality is not None and base.primary.quality is not None
    assert higher.primary.quality >= base.primary.quality


@SETTINGS
@given(catalogs(), features_st, policies_st)
def test_explain_rows_agree_with_the_plan(catalog: Catalog, f: Features, p: ResolvedPolicy) -> None:
    table = CatalogTable(catalog)
    try:
        plan = plan_route(table, f, p, explain=True)
    except NoFeasibleDeploymentError as exc:
        assert "no deployment can serve this request" in exc.message
        return
    rows = {c.deployment: c for c in plan.candidates}
    assert set(rows) == set(table.ids)
    assert rows[plan.primary.deployment.id].status == "chosen"
    for e in plan.entries[1:]:
        assert rows[e.deployment.id].status == "fallback"
    for row in plan.candidates:
        i = table.index[row.deployment]
        if row.status.startswith("excluded:"):
            assert not feasible(table, f, p, i, set())
        else:
            assert feasible(table, f, p, i, set())
    assume(plan.entries)
