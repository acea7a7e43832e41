"""Live estimates: EWMA of observed attempts blended with the catalog, in-flight as queueing;
and output-length priors refined by observed answers. All driven without clocks or sleeps."""

from __future__ import annotations

from typing import Any

import pytest

from app.catalog import load_catalog
from app.routing import Router
from tests.conftest import sim_deployment, small_config

HELLO = {"model": "small", "messages": [{"role": "user", "content": "hello"}], "max_tokens": 100}


@pytest.fixture
def router(write_config) -> Router:
    return Router(load_catalog(write_config(small_config())))


def test_streamed_attempts_move_ttft_and_decode_estimates(router: Router) -> None:
    live = router.live
    ttft0, tps0 = live.estimate("small@sim")
    assert (ttft0, tps0) == (pytest.approx(0.01), pytest.approx(5000))
    for _ in range(50):
        router.attempt_started("small@sim")
        # TTFT 1 s, then 101 tokens in 2 s: 50 tokens/s
        router.attempt_finished("small@sim", ok=True, total_s=3.0, ttft_s=1.0, output_tokens=101)
    ttft, tps = live.estimate("small@sim")
    w = 50 / (50 + 5)
    assert ttft == pytest.approx((1 - w) * 0.01 + w * 1.0, rel=1e-6)
    assert tps == pytest.approx((1 - w) * 5000 + w * 50, rel=1e-6)
    assert live.in_flight("small@sim") == 0


def test_a_few_samples_do_not_swing_the_estimate(router: Router) -> None:
    router.attempt_started("small@sim")
    router.attempt_finished("small@sim", ok=True, total_s=3.0, ttft_s=3.0, output_tokens=1)
    ttft, _ = router.live.estimate("small@sim")
    assert ttft == pytest.approx((5 / 6) * 0.01 + (1 / 6) * 3.0)


def test_failed_attempts_only_release_in_flight(router: Router) -> None:
    before = router.live.estimate("small@sim")
    router.attempt_started("small@sim")
    router.attempt_finished("small@sim", ok=False)
    assert router.live.estimate("small@sim") == before
    assert router.live.samples("small@sim") == 0


def test_in_flight_requests_queue_and_change_the_choice(write_config) -> None:
    config = small_config(**{"small@sim2": sim_deployment(price_in=0.1, price_out=0.2)})
    config["deployments"]["small@sim"] = sim_deployment(price_in=0.1, price_out=0.2)
    router = Router(load_catalog(write_config(config)))
    catalog = router.table.catalog
    body: dict[str, Any] = dict(HELLO)
    first = router.route(catalog, body, {"x-pareto-lambda-latency": "100"}).primary.deployment.id
    for _ in range(64):  # 64 in flight doubles-and-more the first one's TTFT
        router.attempt_started(first)
    ttft, _ = router.live.estimate(first)
    assert ttft == pytest.approx(0.01 * (1 + 64 / 32))
    second = router.route(catalog, body, {"x-pareto-lambda-latency": "100"}).primary.deployment.id
    assert second != first


def test_non_streamed_total_time_scales_both_figures(router: Router) -> None:
    # predicted 0.01 + 100/5000 = 0.03 s; observed 0.3 s: ten times slower
    for _ in range(200):
        router.attempt_started("small@sim")
        router.attempt_finished("small@sim", ok=True, total_s=0.3, output_tokens=100)
    ttft, tps = router.live.estimate("small@sim")
    plan = router.route(router.table.catalog, HELLO, {}, explain=True)
    row = next(c for c in plan.candidates if c.deployment == "small@sim")
    assert row.est_latency_s == pytest.approx(ttft + 100 / tps)
    assert 0.2 < row.est_latency_s < 0.31


def test_output_prior_learns_from_answers(router: Router) -> None:
    body = {"model": "small", "messages": [{"role": "user", "content": "hi there"}]}
    plan = router.route(router.table.catalog, body, {})
    assert plan.features is not None and plan.features.output_tokens == 200  # chat prior
    for _ in range(200):
        router.output_observed(plan, 20)
    assert router.features(body).output_tokens < 40
    # an explicit max_tokens is not a sample of answer length
    capped = router.route(router.table.catalog, {**body, "max_tokens": 5000}, {})
    router.output_observed(capped, 5000)
    assert router.features(body).output_tokens < 40


def test_reload_keeps_live_stats(router: Router, write_config) -> None:
    for _ in range(20):
        router.attempt_started("small@sim")
        router.attempt_finished("small@sim", ok=True, total_s=2.0, ttft_s=1.0, output_tokens=11)
    before = router.live.estimate("small@sim")
    router.bind(load_catalog(write_config(small_config(), name="again.yaml")))
    assert router.live.estimate("small@sim") == pytest.approx(before)
