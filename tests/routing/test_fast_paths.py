"""The router's memos and shortcuts give what the long way gives, and stay bounded.

Speed work (issue 10) memoises what does not depend on the request: feasible sets per
(capabilities, models, category, floor, context-window rank) in :class:`CatalogTable`, and
resolved policies per (policy, floor, pinned model, budget factor, key models) in
:class:`Router`. These tests pin the memos to the plain computation, their bounds, and their
reset on reload.
"""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from app.catalog import load_catalog
from app.catalog.model import Catalog
from app.routing import Router
from app.routing.features import Features
from app.routing.planner import _settled_by_the_best, _walk
from app.routing.policy import ResolvedPolicy
from app.routing.table import MAX_FEASIBLE_SETS, CatalogTable
from tests.conftest import ROOT
from tests.routing.test_properties import catalogs, features_st, policies_st

ENV = {
    k: "test-key"
    for k in (
        "ANTHROPIC_API_KEY",
        "OPENAI_API_KEY",
        "GEMINI_API_KEY",
        "GROQ_API_KEY",
        "CEREBRAS_API_KEY",
    )
}


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return load_catalog(ROOT / "config" / "catalog.yaml", env=ENV)


def body(text: str = "Tell me about the history of Rome.", **extra: Any) -> dict[str, Any]:
    return {"model": "auto", "messages": [{"role": "user", "content": text}], **extra}


def test_memoised_feasible_sets_equal_the_masks(catalog: Catalog) -> None:
    table = CatalogTable(catalog)
    windows = sorted({int(w) for w in table.context_window.tolist()})
    contexts = [0, 1, *(w + d for w in windows for d in (-1, 0, 1)), 10**12]
    models = [None, frozenset({"gpt-oss-120b"}), frozenset({"gpt-5.5", "llama-3.1-8b"})]
    needs = [frozenset(), frozenset({"tools"}), frozenset({"vision", "json"})]
    for need, model, category, floor, context in itertools.product(
        needs, models, ["chat", "code", "nope"], [0.0, 40.0, 58.0], contexts
    ):
        idx, neg_q = table.feasible(need, model, category, floor, context)
        quality = table.quality_for(category)
        mask = (
            table.capability_mask(need)
            & table.model_mask(model)
            & (table.context_window >= context)
            & (quality >= floor)
        )
        assert idx.tolist() == mask.nonzero()[0].tolist(), (need, model, category, floor, context)
        assert neg_q.tolist() == (-quality[idx]).tolist()


def test_the_feasible_memo_is_bounded(catalog: Catalog) -> None:
    table = CatalogTable(catalog)
    for n in range(MAX_FEASIBLE_SETS + 10):  # client-chosen floors: unbounded keys
        table.feasible(frozenset(), None, "chat", n / 100, 800)
    assert len(table._feasible) <= MAX_FEASIBLE_SETS
    idx, _ = table.feasible(frozenset(), None, "chat", 0.0, 800)
    assert len(idx) == len(table)


def test_resolved_policies_are_shared_only_when_nothing_differs(catalog: Catalog) -> None:
    router = Router(catalog)
    a = router.route(catalog, body(), {})
    b = router.route(catalog, body("Hello again, what is Rome?"), {})
    assert a.resolved is b.resolved  # same policy and floor: one resolved object
    pressed = router.route(catalog, body(), {}, budget_factor=4.0)
    assert pressed.resolved is not None and a.resolved is not None
    assert pressed.resolved.lambda_cost == 4 * a.resolved.lambda_cost
    limited = router.route(catalog, body(), {}, allowed_models=frozenset({"gpt-oss-120b"}))
    assert limited.resolved is not None and limited.resolved.models == {"gpt-oss-120b"}
    override = router.route(catalog, body(), {"x-pareto-lambda-cost": "5"})
    assert override.resolved is not None and override.resolved.lambda_cost == 5
    assert override.resolved.overrides == ("lambda_cost",)
    again = router.route(catalog, body(), {})
    assert again.resolved is a.resolved and again.resolved.overrides == ()


def test_a_reload_drops_the_memos(catalog: Catalog, tmp_path: Any) -> None:
    router = Router(catalog)
    before = router.route(catalog, body(), {})
    text = (ROOT / "config" / "policies.yaml").read_text()
    (tmp_path / "policies.yaml").write_text(text.replace("lambda_cost: 10000", "lambda_cost: 7"))
    config = (ROOT / "config" / "catalog.yaml").read_text()
    (tmp_path / "catalog.yaml").write_text(config)
    reloaded = load_catalog(tmp_path / "catalog.yaml", env=ENV)
    router.bind(reloaded)
    after = router.route(reloaded, body(), {})
    assert before.resolved is not None and after.resolved is not None
    assert (before.resolved.lambda_cost, after.resolved.lambda_cost) == (10000, 7)
    # A request that began before the reload still routes on its own catalog's numbers.
    old = router.route(catalog, body(), {})
    assert old.resolved is not None and old.resolved.lambda_cost == 10000


def test_rebinding_the_live_estimates_is_seen_by_the_next_decision(catalog: Catalog) -> None:
    router = Router(catalog)
    first = router.route(catalog, body(), {"x-pareto-lambda-latency": "100"})
    primary = first.primary.deployment.id
    table = router.table
    router.live.bind(table)  # new matrix object
    router.live.ttft_s[table.index[primary]] = 60.0  # a minute to first token
    second = router.route(catalog, body(), {"x-pareto-lambda-latency": "100"})
    assert second.primary.deployment.id != primary
    assert np.isclose(router.live.matrix[table.index[primary], 2], 60.0)


def test_a_floor_rule_on_input_tokens_is_part_of_the_memo_key(
    catalog: Catalog, tmp_path: Any
) -> None:
    text = (ROOT / "config" / "policies.yaml").read_text()
    rules = "  quality_floor_rules:\n"
    text = text.replace(rules, rules + "    - {min_input_tokens: 1000, floor: 57}\n")
    (tmp_path / "policies.yaml").write_text(text)
    (tmp_path / "catalog.yaml").write_text((ROOT / "config" / "catalog.yaml").read_text())
    reloaded = load_catalog(tmp_path / "catalog.yaml", env=ENV)
    router = Router(reloaded)
    short = router.route(reloaded, body(), {}, input_tokens=999)
    long = router.route(reloaded, body(), {}, input_tokens=1000)
    again = router.route(reloaded, body(), {}, input_tokens=999)
    assert short.resolved is not None and long.resolved is not None
    assert (short.resolved.quality_floor, long.resolved.quality_floor) == (20, 57)
    assert again.resolved is short.resolved


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(catalogs(), features_st, policies_st, st.integers(0, 4), st.data())
def test_the_settled_shortcut_agrees_with_the_full_walk(
    catalog: Catalog, f: Features, p: ResolvedPolicy, fallbacks: int, data: st.DataObject
) -> None:
    """Whenever the argmax shortcut answers, the sort-and-walk gives the same plan."""
    table = CatalogTable(catalog)
    q = table.quality_for(f.category)
    utility = q - table.matrix.dot(
        np.array(
            (
                p.lambda_cost * f.input_tokens,
                p.lambda_cost * f.output_tokens,
                p.lambda_latency,
                p.lambda_latency * f.output_tokens,
            )
        )
    )
    if data.draw(st.booleans()):  # exact ties: copy a utility
        utility[data.draw(st.integers(0, len(table) - 1))] = utility[0]
    idx = np.array(
        sorted(data.draw(st.sets(st.integers(0, len(table) - 1), min_size=1))), dtype=np.intp
    )
    u_feasible = utility[idx]
    limit = 1 + fallbacks
    settled = _settled_by_the_best(table, utility, u_feasible, idx, q.tolist(), limit, "c")
    assume(settled is not None)

    def numbers(i: int) -> tuple[float, float, float]:
        c = table.price_input_list[i] * f.input_tokens + table.price_output_list[i] * (
            f.output_tokens
        )
        return q.item(i), c, table.matrix.item(i, 2) + f.output_tokens * table.matrix.item(i, 3)

    assert settled == _walk(table, u_feasible, idx, -q[idx], limit, "c", numbers)


def test_a_policy_named_pinned_does_not_share_the_pinned_memo(catalog: Catalog) -> None:
    from dataclasses import replace

    from app.routing.router import PINNED_POLICY

    own = replace(PINNED_POLICY, lambda_cost=3.0)
    custom = replace(catalog, policies={**catalog.policies, "pinned": own}, default_policy=None)
    router = Router(custom)
    named = router.route(custom, {**body(), "model": "pinned"}, {})
    model = router.route(custom, {**body(), "model": "gpt-oss-120b"}, {})
    assert named.resolved is not None and model.resolved is not None
    assert (named.resolved.lambda_cost, model.resolved.lambda_cost) == (3.0, 10000.0)
