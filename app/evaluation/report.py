"""``pareto eval`` output: a terminal table, a JSON document, and a PNG of the curves."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

from app.evaluation import envelope, routellm
from app.evaluation.baselines import Baselines
from app.evaluation.runner import RouterResult


def _cost(v: float | None) -> str:
    return "n/a" if v is None else f"${v:.4f}"


def _cq_json(m: envelope.CostQuality) -> dict[str, Any]:
    return {
        "area": m.area,
        "cost_per_1k_for_50pct_gain": m.cost_50,
        "cost_per_1k_for_80pct_gain": m.cost_80,
        "cost_per_1k_for_100pct_gain": m.cost_100,
        "cost_per_1k_for_95pct_of_best": m.cost_95_best,
        "hull": [list(p) for p in m.hull],
    }


def _two_json(s: routellm.TwoModelSummary) -> dict[str, Any]:
    return {
        "apgr": s.apgr,
        "auc": s.auc,
        "cpt50": s.cpt50,
        "cpt80": s.cpt80,
        "curve": {"strong_pct": list(s.curve.strong_pcts), "score": list(s.curve.scores)},
    }


def to_json(
    dataset: str, rows: int, split: str, base: Baselines, results: Sequence[RouterResult]
) -> dict[str, Any]:
    """Machine-readable results of one dataset."""
    doc: dict[str, Any] = {
        "dataset": dataset,
        "rows": rows,
        "split": split,
        "baselines": {
            "single": {k: {"cost_per_1k": c, "quality": q} for k, (c, q) in base.single.items()},
            "single_model_mix": _cq_json(base.mix),
            "random_uniform": {
                "cost_per_1k": base.random_uniform_point[0],
                "quality": base.random_uniform_point[1],
                **_cq_json(base.random_uniform),
            },
            "oracle": {
                "cost_per_1k": base.oracle_point[0],
                "quality": base.oracle_point[1],
                **_cq_json(base.oracle),
            },
        },
        "routers": {},
    }
    if base.two_model is not None and base.strong_weak is not None:
        doc["strong_model"], doc["weak_model"] = base.strong_weak
        for name, s in base.two_model.items():
            doc["baselines"][f"routellm_{name}"] = _two_json(s)
    for r in results:
        entry: dict[str, Any] = {
            "points": [
                {"lambda_cost": lam, "cost_per_1k": c, "quality": q}
                for lam, (c, q) in zip(r.lambdas, r.points, strict=True)
            ],
            **_cq_json(r.cost_quality),
        }
        if r.two_model is not None:
            entry.update(_two_json(r.two_model))
        doc["routers"][r.name] = entry
    return doc


def print_table(
    out: TextIO,
    dataset: str,
    rows: int,
    split: str,
    base: Baselines,
    results: Sequence[RouterResult],
) -> None:
    """The human summary of one dataset."""
    print(f"\n{dataset}: {rows} rows ({split})", file=out)
    print(f"  {'single model':<34} {'cost/1k':>10} {'quality':>8}", file=out)
    for name, (c, q) in sorted(base.single.items(), key=lambda kv: kv[1][0]):
        print(f"  {name:<34} {_cost(c):>10} {100 * q:7.2f}%", file=out)
    if base.two_model is not None and base.strong_weak is not None:
        print(
            f"\n  RouteLLM metrics (strong = {base.strong_weak[0]}, weak = {base.strong_weak[1]})",
            file=out,
        )
        print(f"  {'router':<34} {'APGR':>7} {'CPT(50%)':>9} {'CPT(80%)':>9}", file=out)
        two = [("random (RouteLLM, 10 runs)", base.two_model["random"])]
        two += [(r.name, r.two_model) for r in results if r.two_model is not None]
        two.append(("oracle", base.two_model["oracle"]))
        for name, s in two:
            print(f"  {name:<34} {s.apgr:7.3f} {s.cpt50:8.2f}% {s.cpt80:8.2f}%", file=out)
    print("\n  cost-quality (0 = cheapest model, 1 = best single model)", file=out)
    print(
        f"  {'policy':<34} {'area':>6} {'50% gain':>10} {'80% gain':>10} {'100% gain':>10} "
        f"{'95% best':>10}",
        file=out,
    )
    rows_cq = [
        ("single-model mix (the bar)", base.mix),
        ("random model per request", base.random_uniform),
    ]
    rows_cq += [(r.name, r.cost_quality) for r in results]
    rows_cq.append(("oracle", base.oracle))
    for name, m in rows_cq:
        print(
            f"  {name:<34} {m.area:6.3f} {_cost(m.cost_50):>10} {_cost(m.cost_80):>10} "
            f"{_cost(m.cost_100):>10} {_cost(m.cost_95_best):>10}",
            file=out,
        )


def _dense(
    xs: Sequence[float], ys: Sequence[float], steps: int = 30
) -> tuple[list[float], list[float]]:
    """Linear interpolation between consecutive points, so that segments (random mixes of two
    settings) keep their true shape on a log-scaled cost axis."""
    out_x, out_y = [xs[0]], [ys[0]]
    for (x0, y0), (x1, y1) in zip(
        zip(xs, ys, strict=True), zip(xs[1:], ys[1:], strict=True), strict=False
    ):
        for k in range(1, steps + 1):
            t = k / steps
            out_x.append(x0 + t * (x1 - x0))
            out_y.append(y0 + t * (y1 - y0))
    return out_x, out_y


def plot(
    path: Path, dataset: str, split: str, base: Baselines, results: Sequence[RouterResult]
) -> None:
    """PNG: cost/1k vs quality for every router and baseline; for two-model sets also the
    RouteLLM curve (strong-call % vs quality)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    two = base.two_model is not None
    fig, axes = plt.subplots(1, 2 if two else 1, figsize=(13 if two else 8, 5.5), squeeze=False)
    ax = axes[0][0]
    singles = sorted(base.single.items(), key=lambda kv: kv[1][0])
    xs = [c for _, (c, _) in singles]
    ax.scatter(
        xs, [100 * q for _, (_, q) in singles], color="grey", s=18, zorder=3, label="single models"
    )
    for name, (c, q) in singles:
        if len(singles) <= 24:
            ax.annotate(
                name,
                (c, 100 * q),
                fontsize=6,
                color="dimgrey",
                xytext=(3, -3),
                textcoords="offset points",
            )
    a = base.anchors

    def env_xy(m: envelope.CostQuality) -> tuple[list[float], list[float]]:
        hx = [a.cost_at(x) for x, _ in m.hull]
        hy = [100 * (a.cheap_quality + y * (a.best_quality - a.cheap_quality)) for _, y in m.hull]
        hx.append(max(hx[-1], max(xs)) * 1.05)
        hy.append(hy[-1])
        return hx, hy

    mx, my = _dense(*env_xy(base.mix))
    ax.plot(
        mx, my, color="grey", linestyle="--", label=f"single-model mix (area {base.mix.area:.3f})"
    )
    ax.scatter(
        [base.oracle_point[0]],
        [100 * base.oracle_point[1]],
        marker="*",
        s=140,
        color="gold",
        edgecolor="black",
        zorder=4,
        label=f"oracle (area {base.oracle.area:.3f})",
    )
    ax.scatter(
        [base.random_uniform_point[0]],
        [100 * base.random_uniform_point[1]],
        marker="x",
        s=60,
        color="black",
        zorder=4,
        label=f"random model per request (area {base.random_uniform.area:.3f})",
    )
    colours = ["tab:blue", "tab:red", "tab:green", "tab:purple"]
    for r, colour in zip(results, colours, strict=False):
        pts = sorted(set(r.points))
        px, py = [c for c, _ in pts], [100 * q for _, q in pts]
        ax.plot(
            *_dense(px, py),
            color=colour,
            linewidth=1,
            alpha=0.8,
            label=f"{r.name} (area {r.cost_quality.area:.3f})",
        )
        ax.scatter(px, py, color=colour, s=10, zorder=3)
    ax.set_xscale("log")
    ax.set_xlabel("cost per 1k requests (USD, log scale)")
    ax.set_ylabel("mean quality (%)")
    ax.set_title(f"{dataset}: cost vs quality (λ_cost swept)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    if two and base.two_model is not None and base.strong_weak is not None:
        ax2 = axes[0][1]
        curves = [("random (RouteLLM)", base.two_model["random"], "black", ":")]
        curves += [
            (r.name, r.two_model, c, "-")
            for r, c in zip(results, colours, strict=False)
            if r.two_model is not None
        ]
        curves.append(("oracle", base.two_model["oracle"], "goldenrod", "--"))
        for name, s, colour, style in curves:
            ax2.plot(
                s.curve.strong_pcts,
                s.curve.scores,
                marker="o",
                markersize=3,
                color=colour,
                linestyle=style,
                label=f"{name}: APGR {s.apgr:.3f}, CPT(50%) {s.cpt50:.1f}%",
            )
        ax2.set_xlabel(f"calls to the strong model {base.strong_weak[0]} (%)")
        ax2.set_ylabel("quality (%)")
        ax2.set_title(f"{dataset}: RouteLLM curve")
        ax2.grid(True, alpha=0.3)
        ax2.legend(fontsize=7, loc="lower right")
    fig.suptitle(f"evaluated on: {split}", fontsize=9, color="dimgrey")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
