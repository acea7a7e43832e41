"""The ``pareto`` command: serve, simulate, catalog check, route, train, eval."""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

from app.settings import DEFAULT_CONFIG


def _cmd_serve(args: argparse.Namespace) -> int:
    from app.catalog import ConfigError, load_catalog

    config = Path(args.config or os.environ.get("PARETO_CONFIG") or DEFAULT_CONFIG)
    try:
        load_catalog(config)
    except ConfigError as exc:
        print(f"pareto: refusing to start, {exc}", file=sys.stderr)
        return 2
    os.environ["PARETO_CONFIG"] = str(config)
    from pydantic import ValidationError

    from app.settings import load_settings

    try:
        load_settings()  # every worker reads the same environment: refuse it here, once
    except ValidationError as exc:
        problems = "; ".join(
            f"PARETO_{'_'.join(str(p) for p in e['loc']).upper()}: {e['msg']}" for e in exc.errors()
        )
        print(f"pareto: refusing to start, invalid settings: {problems}", file=sys.stderr)
        return 2
    with metrics_dir(args.workers):
        return _run_uvicorn(args)


@contextlib.contextmanager
def metrics_dir(workers: int) -> Iterator[None]:
    """Several workers share one fresh PROMETHEUS_MULTIPROC_DIR, removed when they stop.

    It must be set before the workers import prometheus_client; an operator's own value is
    kept (and not removed).
    """
    if workers <= 1 or os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        yield
        return
    path = tempfile.mkdtemp(prefix="pareto-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = path
    try:
        yield
    finally:
        os.environ.pop("PROMETHEUS_MULTIPROC_DIR", None)
        shutil.rmtree(path, ignore_errors=True)


def _run_uvicorn(args: argparse.Namespace) -> int:
    import uvicorn

    from app.api.server import HardenedHttpToolsProtocol

    options = {
        "app": "app.main:app_from_env",
        "factory": True,
        "host": args.host,
        "port": args.port,
        "loop": "uvloop",
        "http": HardenedHttpToolsProtocol,  # header size limit and header deadline
        "log_level": args.log_level,
        "access_log": False,
        "timeout_graceful_shutdown": args.graceful_timeout,
    }
    if args.workers <= 1:
        uvicorn.run(**options)
        return 0
    from app.telemetry.logging import configure_logging
    from app.workers import Supervisor

    configure_logging(os.environ.get("PARETO_LOG_LEVEL", "info"))
    try:
        return Supervisor(options, args.workers).run()  # one SO_REUSEPORT socket per worker
    except OSError as exc:
        print(f"pareto: cannot listen on {args.host}:{args.port}: {exc.strerror}", file=sys.stderr)
        raise SystemExit(1) from exc


def _cmd_simulate(args: argparse.Namespace) -> int:
    import uvicorn

    from app.catalog import ConfigError, load_catalog
    from app.providers.simulated import Profile
    from app.providers.simulated_server import SimulatorApp

    catalog = None
    if args.config:
        try:
            catalog = load_catalog(args.config)
        except ConfigError as exc:
            print(f"pareto simulate: {exc}", file=sys.stderr)
            return 2
    default = Profile(
        name="default",
        ttft_s=args.ttft_ms / 1000,
        decode_tps=args.tps,
        output_tokens=args.output_tokens,
        realtime=not args.instant,
    )
    app = SimulatorApp.from_catalog(catalog, default)
    uvicorn.run(
        app,
        host=args.host,
        port=args.port,
        loop="uvloop",
        http="httptools",
        log_level="warning",
        access_log=False,
        workers=1,
    )
    return 0


def _cmd_catalog_check(args: argparse.Namespace) -> int:
    from app.catalog import ConfigError, load_catalog

    try:
        catalog = load_catalog(args.path)
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        print(f"{len(exc.problems)} problem(s) in {args.path}", file=sys.stderr)
        return 1
    print(
        f"{args.path}: ok — {len(catalog.models)} models, {len(catalog.deployments)} enabled "
        f"deployments, {len(catalog.policies)} policies"
    )
    for dep_id, reason in sorted(catalog.disabled.items()):
        print(f"  disabled {dep_id}: {reason}")
    return 0


def _cmd_demo_traffic(args: argparse.Namespace) -> int:
    import asyncio
    import time

    import httpx

    from app.demo_traffic import run

    deadline = time.monotonic() + args.wait
    while True:  # in compose the gateway may still be starting
        try:
            if httpx.get(f"{args.url}/healthz", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            print(f"pareto demo-traffic: {args.url} did not answer /healthz", file=sys.stderr)
            return 1
        time.sleep(1)
    stats = asyncio.run(
        run(args.url, rps=args.rps, requests=args.requests, api_key=args.api_key, seed=args.seed)
    )
    print(
        f"sent {stats.sent} requests: "
        + ", ".join(f"{k}: {v}" for k, v in sorted(stats.by_status.items()))
        + f"; transport errors: {stats.transport_errors}"
    )
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pareto", description="Pareto Gateway")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the gateway")
    serve.add_argument("--config", help="config YAML (default: PARETO_CONFIG or config/demo.yaml)")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8080)
    serve.add_argument("--workers", type=int, default=1)
    serve.add_argument("--log-level", default="warning", help="uvicorn's own log level")
    serve.add_argument(
        "--graceful-timeout",
        type=int,
        default=30,
        help="seconds to drain in-flight streams on shutdown",
    )
    serve.set_defaults(func=_cmd_serve)

    sim = sub.add_parser("simulate", help="run a simulated OpenAI-compatible upstream")
    sim.add_argument("--host", default="127.0.0.1")
    sim.add_argument("--port", type=int, default=9000)
    sim.add_argument(
        "--config", help="take per-model behaviour from this config's simulated deployments"
    )
    sim.add_argument("--ttft-ms", type=float, default=0.0)
    sim.add_argument("--tps", type=float, default=1000.0)
    sim.add_argument("--output-tokens", type=int, default=64)
    sim.add_argument("--instant", action="store_true", help="no TTFT/decode sleeps at all")
    sim.set_defaults(func=_cmd_simulate)

    demo = sub.add_parser(
        "demo-traffic", help="send bounded demo traffic (for dashboards on simulated upstreams)"
    )
    demo.add_argument("--url", default="http://127.0.0.1:8080", help="the gateway's root URL")
    demo.add_argument("--rps", type=float, default=2.0, help="requests per second (max 50)")
    demo.add_argument("--requests", type=int, default=0, help="total requests (0: until stopped)")
    demo.add_argument("--api-key", default=os.environ.get("PARETO_DEMO_API_KEY"))
    demo.add_argument("--seed", type=int, default=7)
    demo.add_argument("--wait", type=float, default=120.0, help="seconds to wait for the gateway")
    demo.set_defaults(func=_cmd_demo_traffic)

    catalog = sub.add_parser("catalog", help="catalog tools")
    catalog_sub = catalog.add_subparsers(dest="catalog_command", required=True)
    check = catalog_sub.add_parser("check", help="validate a config file")
    check.add_argument("path")
    check.set_defaults(func=_cmd_catalog_check)

    from app.evaluation.cli import add_eval_parser, add_train_parser

    add_train_parser(sub)
    add_eval_parser(sub)

    from app.auth.cli import add_keys_parser

    add_keys_parser(sub)

    from app.route_command import add_route_parser

    add_route_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
