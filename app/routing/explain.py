"""A routing plan rendered as the text table ``pareto route`` prints (pure formatting)."""

from __future__ import annotations

from app.routing.plan import RoutePlan

_HEADER = ("deployment", "model", "quality", "est. cost $", "est. latency s", "utility", "status")


def format_plan(plan: RoutePlan) -> str:
    """Features, resolved policy, then one row per deployment (best first)."""
    lines: list[str] = []
    f = plan.features
    if f is not None:
        lines.append(
            f"features: {f.input_tokens} input tokens, {f.output_tokens} output tokens "
            f"({f.output_tokens_source}), category {f.category}, difficulty {f.difficulty} "
            f"({', '.join(f.signals) or 'no signals'}), language {f.language}, "
            f"requires {', '.join(sorted(f.requirements)) or 'nothing special'}"
        )
    p = plan.resolved
    if p is not None:
        ceilings = []
        if p.max_cost_usd is not None:
            ceilings.append(f"max cost ${p.max_cost_usd:g}")
        if p.max_latency_s is not None:
            ceilings.append(f"max latency {p.max_latency_s * 1000:g} ms")
        lines.append(
            f"policy: {p.name} — λ_cost {p.lambda_cost:g}/USD, λ_latency {p.lambda_latency:g}/s, "
            f"quality floor {p.quality_floor:g} ({p.floor_source})"
            + (", " + ", ".join(ceilings) if ceilings else "")
        )
    rows = [
        (
            c.deployment,
            c.model,
            f"{c.quality:g}",
            f"{c.est_cost_usd:.5f}",
            f"{c.est_latency_s:.2f}",
            f"{c.utility:.2f}",
            c.status + (f" ({c.detail})" if c.detail else ""),
        )
        for c in plan.candidates
    ]
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(_HEADER)]
    right = {2, 3, 4, 5}

    def line(cells: tuple[str, ...]) -> str:
        return "  ".join(
            cell.rjust(w) if i in right else cell.ljust(w)
            for i, (cell, w) in enumerate(zip(cells, widths, strict=True))
        ).rstrip()

    lines.append("")
    lines.append(line(_HEADER))
    lines.append(line(tuple("-" * w for w in widths)))
    lines.extend(line(r) for r in rows)
    lines.append("")
    lines.append(
        "plan: "
        + " -> ".join(f"{e.deployment.id} [{e.reason}]" for e in plan.entries)
        + f"  ({plan.reason})"
    )
    return "\n".join(lines)
