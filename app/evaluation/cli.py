"""``pareto train`` and ``pareto eval``: argument parsing and printing (logic lives beside)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from app.errors import OfflineError


def _fmt_cost(v: float | None) -> str:
    return "n/a" if v is None else f"${v:.4f}"


def print_train_report(report: dict[str, Any], out: Any = None) -> None:
    """Held-out (out-of-fold) metrics, one block per dataset."""
    out = out or sys.stdout
    print(
        f"trained on {report['rows']} rows ({report['held_out_rows']} held out by the fixed "
        f"split), {len(report['models'])} models, {report['folds']}-fold CV, seed "
        f"{report['seed']}",
        file=out,
    )
    for block in report.get("heldout", []):
        print(f"\n{block['dataset']}: {block['rows']} rows, out-of-fold predictions", file=out)
        if "learned" in block:
            print(f"  {'router':<10} {'APGR':>7} {'CPT(50%)':>9} {'CPT(80%)':>9}", file=out)
            for name in ("learned", "random", "oracle"):
                m = block[name]
                print(
                    f"  {name:<10} {m['apgr']:7.3f} {m['cpt50']:8.2f}% {m['cpt80']:8.2f}%",
                    file=out,
                )
        print(f"  {'curve':<10} {'area':>7} {'cost/1k to 95% of best':>24}", file=out)
        for name, key in (("learned", "learned_cq"), ("mix", "mix_cq"), ("oracle", "oracle_cq")):
            m = block[key]
            print(f"  {name:<10} {m['area']:7.3f} {_fmt_cost(m['cost_95_best']):>24}", file=out)
    for cal in report.get("calibration", []):
        print(
            f"\ncalibration on {cal['dataset']} validation rows: lambda_cost "
            f"{cal['lambda_cost']:.6g} (gap threshold {cal['gap_threshold']:.4f}) gives "
            f"{100 * cal['strong_share']:.1f}% {cal['strong_model']} calls, quality "
            f"{cal['quality']:.4f}",
            file=out,
        )


def cmd_train(args: argparse.Namespace) -> int:
    """``pareto train DATASET… -o router.bin``."""
    from app.evaluation.trainer import TrainOptions, train
    from app.evaluation.training import TrainConfig

    options = TrainOptions(
        folds=args.folds,
        seed=args.seed,
        holdout=args.holdout,
        dim=args.dim,
        config=TrainConfig(
            l2=args.l2,
            steps=args.steps,
            learning_rate=args.learning_rate,
            rank=args.rank,
            seed=args.seed,
        ),
        target_strong_share=args.target_strong_share,
        target_quality=args.target_quality,
    )
    try:
        result = train([Path(p) for p in args.datasets], options, args.models)
    except (OfflineError, ValueError) as exc:
        print(f"pareto train: {exc}", file=sys.stderr)
        return 2
    print_train_report(result.report)
    result.scorer.save(args.output)
    if args.report:
        Path(args.report).write_text(json.dumps(result.report, indent=2) + "\n")
    print(f"\nwrote {args.output} ({Path(args.output).stat().st_size} bytes)")
    return 0


def add_train_parser(sub: Any) -> None:
    """Register ``pareto train``."""
    p = sub.add_parser(
        "train",
        help="train a learned router from routing datasets and feedback logs",
        description="Cross-validates (prints held-out metrics), calibrates, then fits on all "
        "training rows and writes the router file. Inputs: datasets in the "
        "shared/data/routing format and/or feedback JSONL written by POST /v1/feedback.",
    )
    p.add_argument("datasets", nargs="+", help=".jsonl / .jsonl.gz datasets or feedback logs")
    p.add_argument("-o", "--output", required=True, help="router file to write (router.bin)")
    p.add_argument("--models", help="model table (default: <family>-models.json beside it)")
    p.add_argument("--folds", type=int, default=5, help="cross-validation folds (0 = none)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--holdout",
        type=float,
        default=0.0,
        help="fraction of rows never trained on (seeded hash of the id); `pareto eval "
        "--router-file` scores only these rows of the datasets the file was trained on",
    )
    p.add_argument("--dim", type=int, default=1 << 17, help="hashed feature buckets")
    p.add_argument("--l2", type=float, default=1e-4)
    p.add_argument("--steps", type=int, default=150)
    p.add_argument("--learning-rate", type=float, default=0.05)
    p.add_argument(
        "--rank",
        type=int,
        default=0,
        help="0 = a free linear head per model; k > 0 = heads share k learned directions",
    )
    p.add_argument("--target-strong-share", type=float, help="calibrate to this strong share")
    p.add_argument("--target-quality", type=float, help="calibrate to this mean quality (0-1)")
    p.add_argument("--report", help="also write the report as JSON here")
    p.set_defaults(func=cmd_train)


def cmd_eval(args: argparse.Namespace) -> int:
    """``pareto eval DATASET…``."""
    from app.evaluation.evaluate import EvalOptions, evaluate_dataset
    from app.evaluation.gateway_router import DEFAULT_POLICIES
    from app.evaluation.report import plot, print_table
    from app.evaluation.training import TrainConfig

    options = EvalOptions(
        routers=tuple(args.router or ("heuristic", "learned")),
        router_file=Path(args.router_file) if args.router_file else None,
        folds=args.folds,
        seed=args.seed,
        limit=args.limit,
        policies_file=Path(args.policies) if args.policies else DEFAULT_POLICIES,
        policy=args.policy,
        floor=args.floor,
        dim=args.dim,
        train=TrainConfig(
            l2=args.l2,
            steps=args.steps,
            learning_rate=args.learning_rate,
            rank=args.rank,
            seed=args.seed,
        ),
    )
    docs = []
    for path in args.datasets:
        try:
            result = evaluate_dataset(Path(path), options, args.models)
        except (OfflineError, ValueError) as exc:
            print(f"pareto eval: {exc}", file=sys.stderr)
            return 2
        print_table(
            sys.stdout, result.name, result.rows, result.split, result.baselines, result.results
        )
        docs.append(result.doc)
        if args.plot:
            target = Path(args.plot)
            if len(args.datasets) > 1:
                target = target.with_name(f"{target.stem}-{result.name}{target.suffix or '.png'}")
            plot(target, result.name, result.split, result.baselines, result.results)
            print(f"\n  plot: {target}")
    if args.output:
        Path(args.output).write_text(json.dumps({"datasets": docs}, indent=2) + "\n")
        print(f"\nwrote {args.output}")
    return 0


def add_eval_parser(sub: Any) -> None:
    """Register ``pareto eval``."""
    p = sub.add_parser(
        "eval",
        help="score routers on routing datasets (cost-quality curves, RouteLLM metrics)",
        description="Runs the gateway's routing (features → policy → plan) on every row of "
        "each dataset, sweeping lambda_cost, and reports against the dataset's baselines. "
        "Only rows the learned router was not trained on are scored.",
    )
    p.add_argument("datasets", nargs="+", help=".jsonl / .jsonl.gz datasets")
    p.add_argument("--models", help="model table (default: <family>-models.json beside it)")
    p.add_argument(
        "--router",
        action="append",
        choices=("heuristic", "learned"),
        help="router(s) to evaluate (repeatable; default: both)",
    )
    p.add_argument(
        "--router-file",
        help="a `pareto train` file for the learned router (else it is cross-fitted here)",
    )
    p.add_argument("--folds", type=int, default=5, help="folds when cross-fitting")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--limit", type=int, help="evaluate a seeded sample of this many rows")
    p.add_argument("--policies", help="policies file (default: config/policies.yaml)")
    p.add_argument("--policy", default="auto", help="policy whose floor and rules apply")
    p.add_argument("--floor", help="override the policy's quality floor: a number, or none")
    p.add_argument("--dim", type=int, default=1 << 17)
    p.add_argument("--l2", type=float, default=1e-4)
    p.add_argument("--steps", type=int, default=150)
    p.add_argument("--learning-rate", type=float, default=0.05)
    p.add_argument(
        "--rank",
        type=int,
        default=0,
        help="0 = a free linear head per model; k > 0 = heads share k learned directions",
    )
    p.add_argument("-o", "--output", help="write the results as JSON here")
    p.add_argument("--plot", help="write a PNG of the curves here")
    p.set_defaults(func=cmd_eval)
