"""Gateway overhead, side by side: the load generator direct to a simulated upstream vs
through the gateway, alternating in one run, so machine noise hits both alike.

    python -m tests.benchmarks.bench_gateway [--repeats 3] [--workers 2] [--quick]
        [--features full|minimal] [--floor] [--json out.json]

The upstream is `pareto simulate --instant` (TTFT 0, no decode sleeps) in its own process,
so the gateway's own cost is what differs. The "paced" scenarios use a second simulator
that sends its 256 tokens at PACED_TPS, one per network read as real upstreams do: there the
gateway wakes once per token, and CPU per token is the relay's production cost. The load
generator (tests/benchmarks/loadgen.py) is a third process whose CPU is reported.
Reports medians (and min–max spread over repeats) of: added latency p50/p99 (via − direct),
added TTFT p50/p99 for streams, throughput via/direct, gateway CPU ms per request, and RSS.
Loopback only; every phase is bounded in requests and seconds. With --features full the
gateway logs every request (info, the production default); minimal turns request lines off.
With --floor, a forwarder that does nothing but relay (tests/benchmarks/floor_forwarder.py,
same server stack and HTTP client, same worker count) is measured in the same run too: the
floor any gateway on this stack pays, beside what the gateway's features add above it.
With --features full and Redis on this machine, the Redis server's CPU per request is shown
too (it shares the cores), with what one request costs direct (upstream + load generator)
and the via/direct ceiling those imply once every core is busy (cpu_ceiling_ratio).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from app.auth.config import hash_key
from tests.support.procs import free_port, wait_http

ROOT = Path(__file__).resolve().parents[2]
CLK = os.sysconf("SC_CLK_TCK")
BENCH_KEY = "pk-bench-0000000000000000"
# The paced upstream's decode speed: one token per network read, as real upstreams send them
# (50-200 tokens/s), but fast enough to keep the run short. Per-token costs show here.
PACED_TPS = 2000
CORES = os.cpu_count() or 1


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    k = min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))
    return ordered[k]


def tree_pids(pid: int) -> list[int]:
    pids = [pid]
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as f:
                for child in f.read().split():
                    pids.extend(tree_pids(int(child)))
    except OSError:
        pass
    return pids


def cpu_seconds(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime + stime
        except OSError:
            pass
    return total / CLK


def rss_mb(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


@dataclass
class Scenario:
    name: str
    stream: bool
    max_tokens: int
    concurrency: int
    requests: int
    paced: bool = False  # the upstream sends tokens at PACED_TPS, not all at once


def bench_config(
    upstream: str, features: str, redis_url: str | None, paced_upstream: str | None = None
) -> dict[str, Any]:
    config: dict[str, Any] = {
        "include": [str(ROOT / "config" / "policies.yaml")],
        "models": {
            "bench-small": {"quality": 40, "context_window": 128000, "capabilities": ["json"]},
            "bench-big": {"quality": 60, "context_window": 128000, "capabilities": ["json"]},
        },
        "deployments": {
            "bench-small@sim": {
                "kind": "openai_compat",
                "base_url": upstream,
                "upstream_model": "bench",
                "price": {"input": 0.1, "output": 0.4},
                "ttft_s": 0.2,
                "decode_tps": 500,
            },
            "bench-big@sim": {
                "kind": "openai_compat",
                "base_url": upstream,
                "upstream_model": "bench",
                "price": {"input": 3, "output": 15},
                "ttft_s": 0.5,
                "decode_tps": 100,
            },
        },
    }
    if paced_upstream is not None:
        # Named by the paced scenarios only (routing with the model pinned). No policy may
        # pick it for the other scenarios: the router learns its real speed and, with the
        # instant deployments busy (c=64), would spill requests onto it. So the policies are
        # config/policies.yaml's own, inlined with `models` restricted to the instant pair.
        config["models"]["bench-paced"] = {
            "quality": 30,
            "context_window": 128000,
            "capabilities": ["json"],
        }
        config["deployments"]["bench-paced@sim"] = {
            "kind": "openai_compat",
            "base_url": paced_upstream,
            "upstream_model": "bench",
            "price": {"input": 1, "output": 4},
            "ttft_s": 0.2,
            "decode_tps": PACED_TPS,
        }
        shared = yaml.safe_load((ROOT / "config" / "policies.yaml").read_text())
        for policy in shared["policies"].values():
            if "cascade" not in policy and "models" not in policy:
                policy["models"] = ["bench-small", "bench-big"]
        del config["include"]
        config.update(shared)
    if features == "full":
        # Auth on with budget and rate-limit accounting (limits far above what the run uses).
        config["auth"] = {
            "keys": {
                "bench": {
                    "hash": hash_key(BENCH_KEY),
                    "budget": {"daily_usd": 1e6, "monthly_usd": 1e7},
                    "rate_limit": {"requests_per_minute": 10_000_000, "tokens_per_minute": 10**10},
                }
            }
        }
    else:
        config["auth"] = {"enabled": False}
    return config


def start(args: list[str], env: dict[str, str], health: str, log: Path) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "app", *args],
        cwd=ROOT,
        env={**os.environ, **env},
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )
    wait_http(health, proc=proc)
    return proc


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def load(url: str, body: dict[str, Any], n: int, concurrency: int, tmp: Path) -> dict[str, Any]:
    body_file = tmp / "body.json"
    body_file.write_text(json.dumps(body, separators=(",", ":")))
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "tests.benchmarks.loadgen",
            url,
            str(body_file),
            str(n),
            str(concurrency),
            "60",
        ],
        cwd=ROOT,
        capture_output=True,
        check=True,
        env={**os.environ, "BENCH_KEY": BENCH_KEY},
    )
    result: dict[str, Any] = json.loads(out.stdout)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="fewer requests (a smoke run)")
    parser.add_argument("--features", choices=["full", "minimal"], default="full")
    parser.add_argument("--model", default="auto", help="model or policy the requests name")
    parser.add_argument("--json", help="write the raw summary here")
    parser.add_argument(
        "--floor",
        action="store_true",
        help="also measure a forwarder that does nothing but relay (floor_forwarder.py), "
        "in the same run: the floor for any gateway on this stack",
    )
    parser.add_argument(
        "--soak",
        type=int,
        default=0,
        metavar="N",
        help="instead of the scenarios: N requests through the gateway, "
        "RSS per worker sampled at N/2 and N (flat memory check)",
    )
    args = parser.parse_args()

    scale = 0.2 if args.quick else 1.0
    scenarios = [
        Scenario("json c=1", False, 16, 1, int(1000 * scale)),
        Scenario("json c=16", False, 16, 16, int(4000 * scale)),
        Scenario("json c=64", False, 16, 64, int(6000 * scale)),
        Scenario("stream16 c=1", True, 16, 1, int(600 * scale)),
        Scenario("stream256 c=1", True, 256, 1, int(300 * scale)),
        Scenario("stream16 c=64", True, 16, 64, int(3000 * scale)),
        Scenario("paced256 c=1", True, 256, 1, int(50 * scale), paced=True),
        Scenario("paced256 c=32", True, 256, 32, int(640 * scale), paced=True),
    ]
    tmp = Path(tempfile.mkdtemp(prefix="pareto-bench-"))
    sim_port, gw_port = free_port(), free_port()
    upstream = f"http://127.0.0.1:{sim_port}/v1"
    sim = start(
        ["simulate", "--port", str(sim_port), "--instant", "--output-tokens", "256"],
        {},
        f"http://127.0.0.1:{sim_port}/healthz",
        tmp / "sim.log",
    )
    paced_port = free_port()
    paced_upstream = f"http://127.0.0.1:{paced_port}/v1"
    paced_sim = start(
        [
            "simulate",
            "--port",
            str(paced_port),
            "--ttft-ms",
            "0",
            "--tps",
            str(PACED_TPS),
            "--output-tokens",
            "256",
        ],
        {},
        f"http://127.0.0.1:{paced_port}/healthz",
        tmp / "paced-sim.log",
    )
    redis_url = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
    config = bench_config(upstream, args.features, redis_url, paced_upstream)
    cfg_path = tmp / "bench.yaml"
    cfg_path.write_text(yaml.safe_dump(config))
    # Full features log every request (info, the production default) to the log file;
    # minimal turns request lines off.
    level = "info" if args.features == "full" else "warning"
    env = {"PARETO_LOG_LEVEL": level, "PARETO_WATCH_CONFIG": "false"}
    if args.features == "full":
        env["PARETO_REDIS_URL"] = redis_url
    # The Redis server's CPU per request, when it runs on this machine (it shares the cores).
    redis_pid = local_redis_pid(redis_url) if args.features == "full" else None
    gw = start(
        [
            "serve",
            "--config",
            str(cfg_path),
            "--port",
            str(gw_port),
            "--workers",
            str(args.workers),
        ],
        env,
        f"http://127.0.0.1:{gw_port}/healthz",
        tmp / "gw.log",
    )
    floor = None
    if args.floor:
        floor_port = free_port()
        floor = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "uvicorn",
                "tests.benchmarks.floor_forwarder:app",
                "--port",
                str(floor_port),
                "--loop",
                "uvloop",
                "--http",
                "httptools",
                "--no-access-log",
                "--log-level",
                "warning",
                "--workers",
                str(args.workers),
            ],
            cwd=ROOT,
            env={
                **os.environ,
                "FLOOR_UPSTREAM": upstream,
                "FLOOR_PACED_UPSTREAM": paced_upstream,
            },
            stdout=(tmp / "floor.log").open("wb"),
            stderr=subprocess.STDOUT,
        )
        wait_http(f"http://127.0.0.1:{floor_port}/healthz", proc=floor)
        floor_url = f"http://127.0.0.1:{floor_port}/v1/chat/completions"
    results: dict[str, list[dict[str, float]]] = {}
    try:
        via_url = f"http://127.0.0.1:{gw_port}/v1/chat/completions"
        if args.soak:
            soak(via_url, args, gw.pid, tmp)
            return

        def direct_url(sc: Scenario) -> str:
            return f"{paced_upstream if sc.paced else upstream}/chat/completions"

        def via_model(sc: Scenario) -> str:
            return "bench-paced" if sc.paced else args.model

        for sc in scenarios:  # warm-up both paths
            body = request_body(sc, "bench")
            load(direct_url(sc), body, 100, min(sc.concurrency, 16), tmp)
            load(via_url, request_body(sc, via_model(sc)), 100, min(sc.concurrency, 16), tmp)
            if floor is not None:
                load(floor_url, request_body(sc, via_model(sc)), 100, min(sc.concurrency, 16), tmp)
        rss_start = sum(worker_rss(gw.pid))
        for rep in range(args.repeats):
            for sc in scenarios:
                sim_pid = paced_sim.pid if sc.paced else sim.pid
                sim0 = cpu_seconds([sim_pid])
                direct = load(
                    direct_url(sc), request_body(sc, "bench"), sc.requests, sc.concurrency, tmp
                )
                sim_direct = cpu_seconds([sim_pid]) - sim0
                pids = tree_pids(gw.pid)
                cpu0 = cpu_seconds(pids)
                redis0 = cpu_seconds([redis_pid]) if redis_pid else 0.0
                body = request_body(sc, via_model(sc))
                via = load(via_url, body, sc.requests, sc.concurrency, tmp)
                cpu = cpu_seconds(pids) - cpu0
                redis_cpu = cpu_seconds([redis_pid]) - redis0 if redis_pid else None
                n_via = len(via["latencies"])
                n_direct = len(direct["latencies"])
                row = {
                    "added_p50_ms": (pct(via["latencies"], 50) - pct(direct["latencies"], 50))
                    * 1e3,
                    "added_p99_ms": (pct(via["latencies"], 99) - pct(direct["latencies"], 99))
                    * 1e3,
                    "direct_p50_ms": pct(direct["latencies"], 50) * 1e3,
                    "via_p50_ms": pct(via["latencies"], 50) * 1e3,
                    "throughput_ratio": (n_via / via["wall_s"])
                    / (len(direct["latencies"]) / direct["wall_s"]),
                    "direct_rps": len(direct["latencies"]) / direct["wall_s"],
                    "via_rps": n_via / via["wall_s"],
                    "gateway_cpu_ms_per_req": cpu * 1e3 / max(n_via, 1),
                    # What one request costs the machine without the gateway: the upstream's
                    # CPU and the load generator's, per request, direct.
                    "direct_cpu_ms_per_req": (sim_direct + direct["cpu_s"])
                    * 1e3
                    / max(n_direct, 1),
                    "loadgen_cpu_share": via["cpu_s"] / via["wall_s"],
                    "errors": via["errors"] + direct["errors"],
                }
                added_cpu = row["gateway_cpu_ms_per_req"]
                if redis_cpu is not None:
                    row["redis_cpu_ms_per_req"] = redis_cpu * 1e3 / max(n_via, 1)
                    added_cpu += row["redis_cpu_ms_per_req"]
                # The most via/direct can reach once every core is busy: each request via the
                # gateway costs the machine what it costs direct (upstream + load generator)
                # plus what the gateway and its Redis add. Meaningful under load (c >= 16).
                via_max_rps = CORES * 1e3 / (row["direct_cpu_ms_per_req"] + added_cpu)
                row["cpu_ceiling_ratio"] = via_max_rps / row["direct_rps"]
                if floor is not None:
                    floor_pids = tree_pids(floor.pid)
                    cpu0 = cpu_seconds(floor_pids)
                    fl = load(floor_url, body, sc.requests, sc.concurrency, tmp)
                    floor_cpu = cpu_seconds(floor_pids) - cpu0
                    n_floor = len(fl["latencies"])
                    row["floor_added_p50_ms"] = (
                        pct(fl["latencies"], 50) - pct(direct["latencies"], 50)
                    ) * 1e3
                    row["floor_throughput_ratio"] = (n_floor / fl["wall_s"]) / (
                        len(direct["latencies"]) / direct["wall_s"]
                    )
                    row["floor_cpu_ms_per_req"] = floor_cpu * 1e3 / max(n_floor, 1)
                    row["errors"] += fl["errors"]
                if sc.stream:
                    row["cpu_us_per_token"] = row["gateway_cpu_ms_per_req"] * 1e3 / sc.max_tokens
                    row["added_ttft_p50_ms"] = (
                        pct(via["ttfts"], 50) - pct(direct["ttfts"], 50)
                    ) * 1e3
                    row["added_ttft_p99_ms"] = (
                        pct(via["ttfts"], 99) - pct(direct["ttfts"], 99)
                    ) * 1e3
                results.setdefault(sc.name, []).append(row)
                print(
                    f"rep {rep + 1} {sc.name:14s} "
                    + " ".join(f"{k}={v:.3f}" for k, v in row.items()),
                    flush=True,
                )
        rss_end = sum(worker_rss(gw.pid))
    finally:
        stop(gw)
        stop(sim)
        stop(paced_sim)
        if floor is not None:
            stop(floor)
    workers = max(1, args.workers)
    print(
        f"\nGateway: {args.workers} worker(s), features={args.features}, model={args.model}; "
        f"RSS per worker {rss_start / workers:.1f} MB at start of measurement, "
        f"{rss_end / workers:.1f} MB at end\n"
    )
    keys = [
        "added_p50_ms",
        "added_p99_ms",
        "added_ttft_p50_ms",
        "added_ttft_p99_ms",
        "throughput_ratio",
        "gateway_cpu_ms_per_req",
        "cpu_us_per_token",
        "floor_added_p50_ms",
        "floor_throughput_ratio",
        "floor_cpu_ms_per_req",
        "redis_cpu_ms_per_req",
        "direct_cpu_ms_per_req",
        "cpu_ceiling_ratio",
        "loadgen_cpu_share",
        "direct_rps",
        "via_rps",
        "errors",
    ]
    header = f"{'scenario':15s}" + "".join(f"{k:>26s}" for k in keys)
    print(header)
    summary: dict[str, dict[str, list[float]]] = {}
    for name, rows in results.items():
        line = f"{name:15s}"
        summary[name] = {}
        for k in keys:
            vals = [r[k] for r in rows if k in r]
            if not vals:
                line += f"{'-':>26s}"
                continue
            med = statistics.median(vals)
            summary[name][k] = [med, min(vals), max(vals)]
            line += f"{f'{med:.3f} [{min(vals):.2f},{max(vals):.2f}]':>26s}"
        print(line)
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {"summary": summary, "rss_mb_per_worker": [rss_start / workers, rss_end / workers]},
                indent=2,
            )
        )


def local_redis_pid(url: str) -> int | None:
    """The PID of the Redis server at ``url`` when it is a process on this machine."""
    import redis

    client = redis.Redis.from_url(url)
    try:
        pid = int(client.info("server")["process_id"])
    except (redis.RedisError, KeyError, ValueError):
        return None
    finally:
        client.close()
    return pid if Path(f"/proc/{pid}/stat").exists() else None


def worker_pids(gateway_pid: int) -> list[int]:
    """The uvicorn workers under ``pareto serve`` (not its multiprocessing resource tracker);
    the process itself when it serves alone."""
    found = []
    for pid in tree_pids(gateway_pid)[1:]:
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmdline = f.read()
        except OSError:
            continue
        if b"resource_tracker" not in cmdline:
            found.append(pid)
    return found or [gateway_pid]


def worker_rss(gateway_pid: int) -> list[float]:
    return [rss_mb(p) for p in worker_pids(gateway_pid) if rss_mb(p) > 0]


def soak(via_url: str, args: argparse.Namespace, gateway_pid: int, tmp: Path) -> None:
    """N mixed requests (JSON and 16-token streams, new session ids) in 10k batches."""
    half = args.soak // 2
    done = 0
    samples: dict[int, list[float]] = {}
    batch = 10_000
    while done < args.soak:
        n = min(batch, args.soak - done)
        for stream in (False, True):
            body = request_body(Scenario("soak", stream, 16, 16, n // 2), args.model)
            body["messages"][0]["content"] += f" batch {done}"
            result = load(via_url, body, n // 2, 16, tmp)
            if result["errors"]:
                print(f"soak: {result['errors']} errors in batch at {done}", flush=True)
        done += n
        if done >= half and half not in samples:
            samples[half] = worker_rss(gateway_pid)
        print(f"soak {done:>7d} requests: RSS per worker {worker_rss(gateway_pid)} MB", flush=True)
    samples[done] = worker_rss(gateway_pid)
    first, last = samples[half], samples[done]
    growth = [b - a for a, b in zip(first, last, strict=False)]
    print(f"\nRSS per worker at {half}: {first} MB; at {done}: {last} MB; growth {growth} MB")


def request_body(sc: Scenario, model: str) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": model,
        "messages": [{"role": "user", "content": "Say hello to the benchmark in a few words."}],
        "max_tokens": sc.max_tokens,
    }
    if sc.stream:
        body["stream"] = True
    return body


if __name__ == "__main__":
    main()
