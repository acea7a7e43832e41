"""The benchmark's catalog routes each scenario where the benchmark means it to go."""

from __future__ import annotations

from tests.benchmarks.bench_gateway import Scenario, bench_config, request_body


async def test_auto_never_sends_bench_traffic_to_the_paced_deployment(app_client) -> None:
    # The instant scenarios measure the gateway against the instant simulator: if a policy
    # could reach the paced one (2,000 tokens/s), a request routed or spilled there (the
    # router moves load off busy deployments) would measure the simulator's pacing. It is
    # in no plan, not even as a fallback.
    config = bench_config("http://127.0.0.1:9/v1", "minimal", None, "http://127.0.0.1:10/v1")
    client = await app_client(config)
    for stream, max_tokens in ((False, 16), (True, 16), (True, 256)):
        body = request_body(Scenario("x", stream, max_tokens, 1, 1), "auto")
        r = await client.post("/v1/route", json=body)
        assert r.status_code == 200, r.text
        status = {row["deployment"]: row["status"] for row in r.json()["candidates"]}
        assert status["bench-paced@sim"] == "excluded:model_not_in_policy"
        assert r.json()["plan"][0]["deployment"] != "bench-paced@sim"
    paced = request_body(Scenario("x", True, 256, 1, 1, paced=True), "bench-paced")
    r = await client.post("/v1/route", json=paced)
    assert r.status_code == 200, r.text
    assert r.json()["plan"][0]["deployment"] == "bench-paced@sim"
