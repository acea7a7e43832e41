"""``pareto keys create / list / revoke``: manage gateway keys through the admin API.

The commands talk to a running gateway (``--gateway``, default ``$PARETO_GATEWAY_URL`` or
http://127.0.0.1:8080) with ``$PARETO_ADMIN_KEY`` (read from the environment only, so it
stays out of shell history and ``ps``). ``create --static`` needs no gateway: it prints a
new key and the hashed ``auth.keys`` entry to paste into the config.

``create`` prints the key alone on stdout (``KEY=$(pareto keys create --name x)``); every
other line goes to stderr.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

import httpx
import yaml

from app.auth.config import generate_key, hash_key, valid_key_name


def _csv(value: str | None) -> list[str] | None:
    return [v.strip() for v in value.split(",") if v.strip()] if value else None


def _spec(args: argparse.Namespace) -> dict[str, Any]:
    spec: dict[str, Any] = {}
    if args.models:
        spec["models"] = _csv(args.models)
    if args.policies:
        spec["policies"] = _csv(args.policies)
    budget = {
        k: v for k, v in (("daily_usd", args.daily_usd), ("monthly_usd", args.monthly_usd)) if v
    }
    if budget:
        spec["budget"] = budget
    rate = {
        k: v for k, v in (("requests_per_minute", args.rpm), ("tokens_per_minute", args.tpm)) if v
    }
    if rate:
        spec["rate_limit"] = rate
    return spec


def _admin(args: argparse.Namespace, method: str, path: str, **kwargs: Any) -> Any:
    admin_key = os.environ.get("PARETO_ADMIN_KEY")
    if not admin_key:
        raise SystemExit("pareto keys: set PARETO_ADMIN_KEY to the gateway's admin key")
    url = args.gateway.rstrip("/") + path
    try:
        r = httpx.request(
            method, url, headers={"authorization": f"Bearer {admin_key}"}, timeout=10, **kwargs
        )
    except httpx.HTTPError as exc:
        raise SystemExit(f"pareto keys: cannot reach {args.gateway}: {type(exc).__name__}") from exc
    try:
        body = r.json()
    except ValueError:
        body = {}
    if r.status_code >= 400:
        message = (body.get("error") or {}).get("message") if isinstance(body, dict) else None
        raise SystemExit(f"pareto keys: {r.status_code}: {message or r.text[:200]}")
    return body


def _create(args: argparse.Namespace) -> int:
    if not valid_key_name(args.name):
        print("pareto keys: --name must be 1-64 of letters, digits, '.', '_', '-'", file=sys.stderr)
        return 2
    spec = _spec(args)
    if args.static:
        key = generate_key()
        entry = {"auth": {"keys": {args.name: {"hash": hash_key(key), **spec}}}}
        print(key)
        print(
            "# add this to the config (the gateway reloads it by itself); give the key above\n"
            "# to its user now: it is not stored anywhere\n"
            + yaml.safe_dump(entry, sort_keys=False),
            file=sys.stderr,
        )
        return 0
    body = _admin(args, "POST", "/admin/keys", json={"name": args.name, **spec})
    print(body["key"])
    print(f"created key {body['name']!r}; store it now, it cannot be shown again", file=sys.stderr)
    return 0


def _list(args: argparse.Namespace) -> int:
    body = _admin(args, "GET", "/admin/keys")
    rows = [("NAME", "SOURCE", "STATE", "MODELS", "BUDGET/DAY", "TODAY", "RPM", "TPM")]
    for k in body["data"]:
        usage = k.get("usage") or {}
        rows.append(
            (
                k["name"],
                k["source"],
                "revoked" if k["revoked"] else "active",
                ",".join(k["models"]) if k["models"] else "all",
                _money(k["budget"]["daily_usd"]),
                _money(usage.get("today_usd")),
                str(k["rate_limit"]["requests_per_minute"] or "-"),
                str(k["rate_limit"]["tokens_per_minute"] or "-"),
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
    return 0


def _money(value: float | None) -> str:
    return "-" if value is None else f"${value:.4f}"


def _revoke(args: argparse.Namespace) -> int:
    _admin(args, "DELETE", f"/admin/keys/{args.name}")
    print(f"revoked key {args.name!r}", file=sys.stderr)
    return 0


def add_keys_parser(sub: Any) -> None:
    """Register ``pareto keys …`` on the CLI's subparsers."""
    keys = sub.add_parser("keys", help="manage gateway API keys")
    keys.add_argument(
        "--gateway",
        default=os.environ.get("PARETO_GATEWAY_URL", "http://127.0.0.1:8080"),
        help="the gateway's base URL (default: $PARETO_GATEWAY_URL or http://127.0.0.1:8080)",
    )
    keys_sub = keys.add_subparsers(dest="keys_command", required=True)
    create = keys_sub.add_parser("create", help="create a key (printed once)")
    create.add_argument("--name", required=True)
    create.add_argument("--models", help="comma-separated allowed models (default: all)")
    create.add_argument("--policies", help="comma-separated allowed policies (default: all)")
    create.add_argument("--daily-usd", type=float, help="budget per UTC day")
    create.add_argument("--monthly-usd", type=float, help="budget per UTC month")
    create.add_argument("--rpm", type=int, help="requests per minute")
    create.add_argument("--tpm", type=int, help="tokens per minute")
    create.add_argument(
        "--static", action="store_true", help="print a config entry instead (no gateway needed)"
    )
    create.set_defaults(func=_create)
    lst = keys_sub.add_parser("list", help="list keys with limits and today's spend")
    lst.set_defaults(func=_list)
    revoke = keys_sub.add_parser("revoke", help="revoke a run-time key on every replica")
    revoke.add_argument("name")
    revoke.set_defaults(func=_revoke)
