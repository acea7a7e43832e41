"""Routing outcomes pinned: a recorded set of requests must route exactly as recorded.

The hypothesis properties say a plan is *valid*; this says it is *the same plan*. It guards
speed work on the router: every case (features, resolved policy, plan entries with their
estimates, reason header, sticky outcome, explain rows, or the error) must match the recording
in ``pinned_outcomes.json.gz``, floats to 1e-9 relative (numpy's mat-vec may round differently
on another CPU), everything else exactly.

The recording is self-contained: it holds the config files (copies of ``config/*.yaml`` and a
50-deployment catalog) and every request body, so editing the shipped config does not break
it. Requests: 120 real prompts sampled from ``shared/data/routing`` (CRUXEval code, MMLU) and
generated ones (lexicon cues, code fences, math, lists, CJK and other scripts, images, tools,
JSON mode, long and multi-turn prompts), each crossed with policies, pinned models, header and
body overrides (some invalid), unhealthy sets, sticky sessions, budget factors, key model
limits and explain. The routers have live estimates and output priors fed by a fixed series
of attempts.

Regenerate only when a routing outcome is *meant* to change (say so in the commit)::

    python tests/routing/test_pinned_outcomes.py [SHARED_DATA_DIR]
"""

from __future__ import annotations

import gzip
import json
import math
import random
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
if __name__ == "__main__":  # run as a script: import this checkout's app
    sys.path.insert(0, str(ROOT))

from app.catalog import load_catalog  # noqa: E402
from app.catalog.model import Catalog  # noqa: E402
from app.errors import GatewayError  # noqa: E402
from app.routing import Router, Sticky  # noqa: E402
from app.routing.plan import RoutePlan  # noqa: E402

RECORDING = Path(__file__).with_name("pinned_outcomes.json.gz")
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


# -- replay ------------------------------------------------------------------------------------
def _routers(files: dict[str, str], tmp: Path) -> dict[str, tuple[Router, Catalog, Catalog]]:
    """name -> (router with live state, its catalog, a second load of the same config)."""
    for name, text in files.items():
        (tmp / name).write_text(text)
    out = {}
    for name in files:
        if name == "policies.yaml":
            continue
        catalog = load_catalog(tmp / name, env=ENV)
        router = Router(catalog)
        _feed(router, catalog)
        out[name] = (router, catalog, load_catalog(tmp / name, env=ENV))
    return out


def _feed(router: Router, catalog: Catalog) -> None:
    """A fixed series of attempts and answers, so live estimates and priors are in play."""
    ids = [d.id for d in catalog.deployments]
    rng = random.Random(7)
    for n in range(60):
        dep = ids[rng.randrange(len(ids))]
        router.attempt_started(dep)
        if n % 5 == 4:
            continue  # left in flight: queueing raises its TTFT
        streamed = n % 2 == 0
        total = rng.choice([0.3, 0.8, 1.5, 4.0, 9.0])
        router.attempt_finished(
            dep,
            ok=n % 7 != 3,
            total_s=total,
            ttft_s=total * rng.choice([0.1, 0.3, 0.6]) if streamed else None,
            output_tokens=rng.choice([1, 40, 300, 1200]),
        )
    for n, category in enumerate(["chat", "code", "math", "creative", "chat", "chat"]):
        router.priors.observe(category, 50 + 170 * n)


def outcome(plan: RoutePlan) -> dict[str, Any]:
    """Everything a routing decision decides, with exact (unrounded) floats."""
    assert plan.features is not None and plan.resolved is not None
    sticky = plan.sticky
    policy = plan.resolved.to_dict()
    # Shown by POST /v1/route since the recording was made; lambda_cost, pinned here,
    # already carries it (the recorded cases pass budget factors).
    policy.pop("budget_factor")
    return {
        "features": plan.features.to_dict(),
        "policy": policy,
        "plan": [
            [e.deployment.id, e.reason, e.est_cost_usd, e.est_latency_s, e.utility, e.quality]
            for e in plan.entries
        ],
        "reason": plan.reason,
        "feasible": plan.feasible,
        "best_effort": plan.best_effort,
        "sticky": None
        if sticky is None
        else [
            sticky.deployment,
            sticky.kept,
            sticky.switch_reason,
            sticky.cache_value,
            sticky.margin,
        ],
        "candidates": [
            [
                c.deployment,
                c.model,
                c.quality,
                c.est_cost_usd,
                c.est_latency_s,
                c.utility,
                c.status,
                c.detail,
            ]
            for c in plan.candidates
        ],
    }


def run_case(
    routers: dict[str, tuple[Router, Catalog, Catalog]],
    bodies: list[dict[str, Any]],
    case: dict[str, Any],
) -> dict[str, Any]:
    router, catalog, other = routers[case["catalog"]]
    body = {**bodies[case["body"]], **case["fields"]}
    kw = dict(case["kwargs"])
    if "sticky" in kw:
        kw["sticky"] = Sticky(*kw["sticky"])
    for key in ("unavailable", "allowed_models"):
        if key in kw:
            kw[key] = frozenset(kw[key])
    try:
        plan = router.route(
            other if case.get("other_catalog") else catalog, body, case["headers"], **kw
        )
    except GatewayError as exc:
        return {"error": type(exc).__name__, "message": exc.message, "param": exc.param}
    return outcome(plan)


def _same(a: Any, b: Any, where: str = "") -> str | None:
    """Where ``a`` and ``b`` differ (floats to 1e-9 relative), or None."""
    if isinstance(a, float) and isinstance(b, float | int) and not isinstance(b, bool):
        if math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-15):
            return None
        return f"{where}: {a!r} != {b!r}"
    if isinstance(a, dict) and isinstance(b, dict):
        if a.keys() != b.keys():
            return f"{where}: keys {sorted(a)} != {sorted(b)}"
        for k in a:
            diff = _same(a[k], b[k], f"{where}.{k}")
            if diff:
                return diff
        return None
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return f"{where}: {len(a)} items != {len(b)}: {a!r} != {b!r}"
        for n, (x, y) in enumerate(zip(a, b, strict=True)):
            diff = _same(x, y, f"{where}[{n}]")
            if diff:
                return diff
        return None
    return None if a == b and type(a) is type(b) else f"{where}: {a!r} != {b!r}"


@pytest.fixture(scope="module")
def recording() -> dict[str, Any]:
    with gzip.open(RECORDING, "rt", encoding="utf-8") as f:
        data: dict[str, Any] = json.load(f)
    return data


def test_every_recorded_request_routes_as_recorded(
    recording: dict[str, Any], tmp_path: Path
) -> None:
    routers = _routers(recording["files"], tmp_path)
    bodies, cases = recording["bodies"], recording["cases"]
    assert len(cases) >= 1000
    failures = []
    for n, case in enumerate(cases):
        diff = _same(run_case(routers, bodies, case), case["expected"], f"case {n}")
        if diff:
            failures.append(diff)
    assert not failures, f"{len(failures)} of {len(cases)} differ; first: " + "; ".join(
        failures[:5]
    )


def test_the_recording_covers_what_it_claims(recording: dict[str, Any]) -> None:
    expected = [c["expected"] for c in recording["cases"]]
    plans = [e for e in expected if "plan" in e]
    assert len(plans) > 0.7 * len(expected)
    assert any(e["candidates"] for e in plans) and any(e["sticky"] for e in plans)
    assert any(e["best_effort"] for e in plans)
    reasons = {row[1] for e in plans for row in e["plan"]}
    assert {"best_utility", "same_model_other_provider", "next_best_utility"} <= reasons
    assert len({e["features"]["category"] for e in plans}) == 7
    assert {e["features"]["difficulty"] for e in plans} == {"easy", "medium", "hard"}
    assert len({e["error"] for e in expected if "error" in e}) >= 3


# -- recording ---------------------------------------------------------------------------------
FILLER = (
    "The service ingests events from several regions, normalises their timestamps and writes "
    "them to a partitioned table. Operators reported that late events are sometimes dropped. "
)
SCRIPTS = {
    "zh": "请把下面的段落翻译成英文并解释其中的技术细节。",
    "ja": "次の文章を要約してください。ひらがなとカタカナも含みます。",
    "ko": "다음 문장을 요약해 주세요. 기술적인 내용이 있습니다.",
    "ru": "Пожалуйста, объясните, как работает этот алгоритм сортировки.",
    "ar": "يرجى شرح كيفية عمل هذه الخوارزمية بالتفصيل.",
    "hi": "कृपया इस एल्गोरिदम को विस्तार से समझाइए।",
    "el": "Παρακαλώ εξηγήστε πώς λειτουργεί αυτός ο αλγόριθμος.",
}
LATIN = {
    "es": "¿Cómo puedo escribir una función que ordene la lista de los números para una tabla?",
    "fr": "Est-ce que vous pouvez expliquer le problème avec une solution pour les données?",
    "de": "Ich verstehe nicht, wie die Funktion mit einer Liste für das Ergebnis arbeitet.",
    "pt": "Você pode explicar como o código funciona com uma lista para o resultado?",
    "it": "Come posso scrivere una funzione che non usa la lista per il risultato?",
}


def _lexicon_words() -> list[str]:
    from app.routing import lexicon

    words: set[str] = set(lexicon.ALL_WORDS)
    return sorted(words)


def _generated_text(rng: random.Random, words: list[str]) -> str:
    parts: list[str] = []
    size = rng.choice([3, 12, 40, 150, 1000, 4000, 4000, 40000])  # characters of filler
    cues = rng.sample(words, rng.choice([0, 1, 2, 4, 8]))
    parts.append(" ".join(cues).capitalize() + ("?" if rng.random() < 0.5 else "."))
    if rng.random() < 0.3:
        parts.append(
            rng.choice(
                [
                    "Think step by step.",
                    "First, read it. Then, fix it. Finally, test it.",
                    "Do this and then that, after that check the edge case.",
                    "Steps:\n1. parse\n2. validate\n3. store",
                ]
            )
        )
    if rng.random() < 0.25:
        lines = rng.choice([3, 30, 80])
        code = "\n".join("    x = f(x)  # one more step" for _ in range(lines))
        parts.append(f"```python\ndef f(x):\n{code}\n```")
    if rng.random() < 0.2:
        parts.append(
            rng.choice(["$x^2 + y^2 = z^2$", r"\frac{a}{b} + \sum_i x_i^2 + \int f", "2^10"])
        )
    if rng.random() < 0.15:
        lang = rng.choice(sorted(SCRIPTS))
        parts.append(SCRIPTS[lang] * rng.choice([1, 5, 40]))
    if rng.random() < 0.15:
        parts.append(LATIN[rng.choice(sorted(LATIN))])
    if rng.random() < 0.1:
        parts.append("hello! thanks, good morning")
    filler = (FILLER * (size // len(FILLER) + 1))[:size]
    parts.insert(rng.randrange(len(parts) + 1), filler)
    if rng.random() < 0.3:
        parts.append(" ".join(rng.sample(words, 6)))  # cues in the tail window
    return "\n".join(parts)


def _generated_body(rng: random.Random, words: list[str]) -> dict[str, Any]:
    messages: list[Any] = []
    if rng.random() < 0.4:
        role = rng.choice(["system", "developer"])
        messages.append(
            {"role": role, "content": rng.choice(["Be terse.", _generated_text(rng, words)])}
        )
    for turn in range(rng.choice([1, 1, 1, 2, 4, 8])):
        if turn:
            reply: dict[str, Any] = {"role": "assistant", "content": "Sure: " + FILLER[:80]}
            if rng.random() < 0.2:
                reply["tool_calls"] = [
                    {
                        "id": f"call_{turn}",
                        "type": "function",
                        "function": {"name": "lookup", "arguments": '{"q": "partition"}'},
                    }
                ]
            messages.append(reply)
        text = _generated_text(rng, words)
        if rng.random() < 0.15:
            content: Any = [{"type": "text", "text": text}]
            for _ in range(rng.choice([1, 2])):
                content.append({"type": "image_url", "image_url": {"url": "data:,"}})
            if rng.random() < 0.3:
                content.append({"type": "text", "text": "and this"})
                content.append("not a part")
            messages.append({"role": "user", "content": content})
        else:
            messages.append({"role": "user", "content": text})
    if rng.random() < 0.03:
        messages.append("not a message")
    body: dict[str, Any] = {"messages": messages}
    if rng.random() < 0.15:
        body["tools"] = [
            {
                "type": "function",
                "function": {"name": "lookup", "parameters": {"type": "object", "properties": {}}},
            }
        ]
    if rng.random() < 0.02:
        body["functions"] = [{"name": "legacy"}]
    if rng.random() < 0.15:
        body["response_format"] = {"type": rng.choice(["json_object", "json_schema", "text"])}
    if rng.random() < 0.05:
        body["logprobs"] = True
    r = rng.random()
    if r < 0.3:
        body["max_tokens"] = rng.choice([1, 64, 250, 4000, 100000])
    elif r < 0.4:
        body["max_completion_tokens"] = rng.choice([32, 900])
    elif r < 0.45:
        body["max_tokens"] = rng.choice([0, -5, True, "300"])
    return body


def _variants(
    rng: random.Random, body: int, catalog: Catalog, name: str
) -> Iterator[dict[str, Any]]:
    """Two to four requests per body: policy or model, overrides and router inputs."""
    ids = [d.id for d in catalog.deployments]
    models = sorted(catalog.models)
    policies = sorted(p for p, v in catalog.policies.items() if v.cascade is None)
    for _ in range(rng.choice([2, 3, 4])):
        b: dict[str, Any] = {}  # fields set over the recorded body
        headers: dict[str, str] = {}
        kwargs: dict[str, Any] = {}
        r = rng.random()
        b["model"] = (
            rng.choice(policies) if r < 0.7 else rng.choice(models) if r < 0.97 else "no-such"
        )
        if rng.random() < 0.1:
            headers["x-pareto-policy"] = rng.choice([*policies, "nope"])
        if rng.random() < 0.25:
            knobs = {
                "quality_floor": rng.choice([0, 35, 50, 58, 70, 101]),
                "max_cost_usd": rng.choice([0.00005, 0.001, 0.02, -1]),
                "max_latency_ms": rng.choice([400, 1500, 6000]),
                "lambda_cost": rng.choice([0, 100, 50000]),
                "lambda_latency": rng.choice([0, 5, 50]),
            }
            chosen = rng.sample(sorted(knobs), rng.choice([1, 2, 3]))
            if rng.random() < 0.5:
                for k in chosen:
                    headers["x-pareto-" + k.replace("_", "-")] = str(knobs[k])
            else:
                b["pareto"] = {k: knobs[k] for k in chosen}
        if rng.random() < 0.25:
            kwargs["unavailable"] = sorted(rng.sample(ids, rng.choice([1, 3, len(ids) // 2])))
            if rng.random() < 0.2:
                kwargs["unavailable"] = sorted(ids)
        if rng.random() < 0.15:
            kwargs["sticky"] = [
                rng.choice([*ids, "gone@nowhere"]),
                rng.choice([0, 500, 5000, 50000]),
            ]
        if rng.random() < 0.15:
            kwargs["budget_factor"] = rng.choice([1.5, 4.0, 50.0])
        if rng.random() < 0.1:
            kwargs["allowed_models"] = sorted(rng.sample(models, rng.choice([1, 2, 3])))
        if rng.random() < 0.08:
            kwargs["explain"] = True
        if rng.random() < 0.05:
            kwargs["input_tokens"] = rng.choice([10, 800, 150000])
        case: dict[str, Any] = {
            "catalog": name,
            "body": body,
            "fields": b,
            "headers": headers,
            "kwargs": kwargs,
        }
        if rng.random() < 0.03:
            case["other_catalog"] = True  # a request that began before a reload: no live view
        yield case


def _bench_catalog(tmp: Path) -> str:
    """The benchmark's 50 deployments, plus policies with best effort and a model subset."""
    import yaml

    from tests.benchmarks.bench_routing import catalog_50

    config = yaml.safe_load(catalog_50(tmp).read_text())
    config["include"] = ["policies.yaml"]
    config["policies"] = {
        "strict": {
            "lambda_cost": 1000,
            "lambda_latency": 1.0,
            "quality_floor": 55,
            "max_latency_ms": 2500,
            "best_effort": True,
            "max_fallbacks": 6,
        },
        "narrow": {
            "lambda_cost": 3000,
            "lambda_latency": 0.5,
            "quality_floor": "heuristic",
            "models": ["model-2", "model-3", "model-7"],
            "max_fallbacks": 1,
        },
    }
    return str(yaml.safe_dump(config))


def _rounded(value: Any) -> Any:
    """Floats to 12 significant digits (the comparison is to 1e-9): a smaller recording."""
    if isinstance(value, float):
        return float(f"{value:.12g}")
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_rounded(v) for v in value]
    return value


def record(shared: Path) -> None:
    import tempfile

    rng = random.Random(20260701)
    bodies: list[dict[str, Any]] = []
    for dataset, count in (("crux", 60), ("mmlu", 60)):
        with gzip.open(shared / f"{dataset}.jsonl.gz", "rt", encoding="utf-8") as f:
            rows = [json.loads(line) for line in f]
        for row in rng.sample(rows, count):
            bodies.append({"messages": row["messages"]})
    words = _lexicon_words()
    bodies += [_generated_body(rng, words) for _ in range(330)]
    with tempfile.TemporaryDirectory() as tmp:
        files = {
            name: (ROOT / "config" / name).read_text()
            for name in ("policies.yaml", "demo.yaml", "catalog.yaml")
        }
        files["catalog50.yaml"] = _bench_catalog(Path(tmp))
        routers = _routers(files, Path(tmp))
        cases = []
        for n in range(len(bodies)):
            name = rng.choice(["demo.yaml", "catalog.yaml", "catalog50.yaml", "catalog50.yaml"])
            for case in _variants(rng, n, routers[name][1], name):
                case["expected"] = _rounded(run_case(routers, bodies, case))
                cases.append(case)
    recorded = {"files": files, "bodies": bodies, "cases": cases}
    text = json.dumps(recorded, ensure_ascii=False, separators=(",", ":"))
    RECORDING.write_bytes(gzip.compress(text.encode(), compresslevel=9, mtime=0))
    errors = sum("error" in c["expected"] for c in cases)
    print(f"{RECORDING.name}: {len(cases)} cases ({errors} errors), {RECORDING.stat().st_size} B")


if __name__ == "__main__":
    record(Path(sys.argv[1] if len(sys.argv) > 1 else "/work/shared/data/routing"))
