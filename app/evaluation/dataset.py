"""Reader for routing datasets: ``<name>.jsonl[.gz]`` rows plus a ``<family>-models.json`` table.

The format and the cost rule are normative in ``shared/data/routing/README.md``:
``input_tokens(row) = ceil(sum(len(content)) / 4)`` and
``cost(row, m) = (input_tokens·in_price + output_tokens[m]·out_price) / 1e6``.
"""

from __future__ import annotations

import gzip
import json
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from app.errors import DatasetError


@dataclass(frozen=True, slots=True)
class Price:
    """USD per million tokens for one model."""

    input_usd_per_mtok: float
    output_usd_per_mtok: float


@dataclass(frozen=True, slots=True)
class Row:
    """One request with every candidate model's quality and output length."""

    id: str
    messages: tuple[Mapping[str, Any], ...]
    scores: tuple[float, ...]
    output_tokens: tuple[int, ...]
    category: str | None
    source: str

    @property
    def input_tokens(self) -> int:
        """``ceil(total characters / 4)``, the README's estimate (no tokenizer)."""
        return math.ceil(sum(len(str(m.get("content") or "")) for m in self.messages) / 4)


@dataclass(frozen=True, slots=True)
class Dataset:
    """Rows of one file, with models in a fixed order shared by every row's tuples."""

    name: str
    models: tuple[str, ...]
    prices: tuple[Price, ...]
    rows: tuple[Row, ...]

    def cost(self, row: Row, model_index: int) -> float:
        """USD of sending ``row`` to model ``model_index``."""
        price = self.prices[model_index]
        return (
            row.input_tokens * price.input_usd_per_mtok
            + row.output_tokens[model_index] * price.output_usd_per_mtok
        ) / 1e6

    def subset(self, indices: Sequence[int]) -> Dataset:
        """The same dataset restricted to ``indices`` (in that order)."""
        return Dataset(self.name, self.models, self.prices, tuple(self.rows[i] for i in indices))


def dataset_name(path: Path) -> str:
    """``mmlu`` for ``.../mmlu.jsonl.gz``."""
    name = path.name
    for suffix in (".gz", ".jsonl", ".json"):
        name = name.removesuffix(suffix)
    return name


def default_models_path(path: Path) -> Path:
    """``<dir>/<family>-models.json`` where the family is the name before the first ``-``."""
    family = dataset_name(path).split("-")[0]
    return path.parent / f"{family}-models.json"


def iter_jsonl(path: Path) -> Iterator[dict[str, Any]]:
    """JSON objects of a ``.jsonl`` or gzip-compressed ``.jsonl.gz`` file, blank lines skipped."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rt", encoding="utf-8") as fh:
            for lineno, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise DatasetError(f"{path}:{lineno}: not valid JSON ({exc.msg})") from exc
                if not isinstance(obj, dict):
                    raise DatasetError(f"{path}:{lineno}: each line must be a JSON object")
                yield obj
    except OSError as exc:
        raise DatasetError(f"{path}: cannot read ({exc.strerror or exc})") from exc


def load_prices(path: Path) -> dict[str, Price]:
    """The model table: ``{name: {"input_usd_per_mtok": …, "output_usd_per_mtok": …}}``."""
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise DatasetError(
            f"{path}: cannot read the model table ({exc.strerror or exc}); pass --models"
        ) from exc
    except json.JSONDecodeError as exc:
        raise DatasetError(f"{path}: not valid JSON ({exc.msg})") from exc
    prices = {}
    for name, entry in raw.items():
        try:
            prices[name] = Price(
                float(entry["input_usd_per_mtok"]), float(entry["output_usd_per_mtok"])
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise DatasetError(
                f"{path}: model {name!r} needs numeric input_usd_per_mtok and output_usd_per_mtok"
            ) from exc
    return prices


def _row(obj: dict[str, Any], models: tuple[str, ...], where: str) -> Row:
    try:
        scores = obj["scores"]
        out = obj["output_tokens"]
        messages = obj["messages"]
        rid = str(obj["id"])
    except KeyError as exc:
        raise DatasetError(f"{where}: missing key {exc.args[0]!r}") from exc
    if set(scores) != set(models) or set(out) != set(models):
        raise DatasetError(f"{where}: scores/output_tokens must have the models {sorted(models)}")
    if not isinstance(messages, list) or not messages:
        raise DatasetError(f"{where}: messages must be a non-empty list")
    tags = obj.get("tags") or {}
    return Row(
        id=rid,
        messages=tuple(messages),
        scores=tuple(float(scores[m]) for m in models),
        output_tokens=tuple(int(out[m]) for m in models),
        category=tags.get("category"),
        source=str(tags.get("source", "")),
    )


def load_dataset(path: Path | str, models_path: Path | str | None = None) -> Dataset:
    """Read a dataset and its model table (default: the family's ``-models.json`` beside it)."""
    path = Path(path)
    mpath = Path(models_path) if models_path else default_models_path(path)
    prices = load_prices(mpath)
    rows: list[Row] = []
    models: tuple[str, ...] = ()
    for i, obj in enumerate(iter_jsonl(path)):
        where = f"{path}: row {i + 1}"
        if not models:
            models = tuple(sorted(obj.get("scores") or {}))
            if not models:
                raise DatasetError(f"{where}: 'scores' must name at least one model")
            missing = [m for m in models if m not in prices]
            if missing:
                raise DatasetError(f"{mpath}: no price for {', '.join(missing)}")
        rows.append(_row(obj, models, where))
    if not rows:
        raise DatasetError(f"{path}: no rows")
    return Dataset(dataset_name(path), models, tuple(prices[m] for m in models), tuple(rows))
