"""``pareto route "PROMPT"``: how the gateway would route a prompt, and why (no model call)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from app.settings import DEFAULT_CONFIG


def _cmd_route(args: argparse.Namespace) -> int:
    from app.catalog import ConfigError, load_catalog
    from app.errors import GatewayError
    from app.routing import Router
    from app.routing.explain import format_plan

    config = Path(args.config or os.environ.get("PARETO_CONFIG") or DEFAULT_CONFIG)
    try:
        catalog = load_catalog(config)
    except ConfigError as exc:
        print(f"pareto route: {exc}", file=sys.stderr)
        return 2
    prompt = sys.stdin.read() if args.prompt == "-" else args.prompt
    body: dict[str, Any] = {
        "model": args.model or args.policy or catalog.default_policy or "auto",
        "messages": [{"role": "user", "content": prompt}],
    }
    if args.max_tokens is not None:
        body["max_tokens"] = args.max_tokens
    headers = {}
    if args.policy and args.model:
        headers["x-pareto-policy"] = args.policy
    router = Router(catalog)
    try:
        plan = router.route(catalog, body, headers, explain=True, input_tokens=args.input_tokens)
    except GatewayError as exc:
        print(f"pareto route: {exc.code}: {exc.message}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(plan.explain(), indent=2))
    else:
        print(format_plan(plan))
    return 0


def add_route_parser(sub: Any) -> None:
    """Register ``pareto route`` on the CLI's subparsers."""
    route = sub.add_parser(
        "route", help="explain how a prompt would be routed (no model is called)"
    )
    route.add_argument("prompt", help="the user message ('-' reads it from stdin)")
    route.add_argument("--policy", help="routing policy (default: the config's default, auto)")
    route.add_argument("--model", help="a concrete catalog model instead of a policy")
    route.add_argument("--max-tokens", type=int, help="the request's max_tokens")
    route.add_argument(
        "--input-tokens", type=int, help="what-if: use this input size instead of the estimate"
    )
    route.add_argument("--config", help="config YAML (default: PARETO_CONFIG or config/demo.yaml)")
    route.add_argument("--json", action="store_true", help="print the /v1/route JSON instead")
    route.set_defaults(func=_cmd_route)
