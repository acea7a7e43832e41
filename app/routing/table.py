"""Per-catalog arrays, built once per (re)load so a routing decision is a few vector ops.

:class:`CatalogTable` lines every enabled deployment up by index: prices (USD per token),
static TTFT and 1/decode speed, context windows, quality per task category, capability and
model masks. Everything that does not depend on the request is computed here.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Iterable, Mapping
from itertools import combinations
from typing import Final

import numpy as np
import numpy.typing as npt

from app.catalog.model import Catalog, Deployment
from app.catalog.spec import CATEGORIES

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]
IntArray = npt.NDArray[np.intp]
CAPABILITIES = ("tools", "vision", "json", "logprobs")
# Per deployment, USD per input token written to the prompt cache above the input price: as
# an array and as plain floats (:meth:`CatalogTable.write_surcharge`).
Surcharge = tuple[FloatArray, list[float]]
# Bound on memoised feasible sets per table: keys include client-chosen floors, so a cap keeps
# memory flat whatever the requests; a full cache is simply dropped and refilled.
MAX_FEASIBLE_SETS: Final = 4096


class CatalogTable:
    """Column arrays over ``catalog.deployments`` (index i = ``deployments[i]``)."""

    __slots__ = (
        "catalog",
        "deployments",
        "ids",
        "index",
        "model_names",
        "providers",
        "price_input",
        "price_cached_input",
        "price_output",
        "ttft_s",
        "inv_tps",
        "context_window",
        "max_output_tokens",
        "_quality",
        "_caps",
        "_models",
        "_by_model",
        "all_true",
        "matrix",
        "price_input_list",
        "price_output_list",
        "price_cached_list",
        "_hard",
        "_windows",
        "_feasible",
        "_quality_lists",
        "same_model",
        "_cache_mins",
        "_surcharges",
    )

    def __init__(self, catalog: Catalog) -> None:
        deps: tuple[Deployment, ...] = catalog.deployments
        self.catalog = catalog
        self.deployments = deps
        self.ids: tuple[str, ...] = tuple(d.id for d in deps)
        self.index: dict[str, int] = {d.id: i for i, d in enumerate(deps)}
        self.model_names: tuple[str, ...] = tuple(d.model.name for d in deps)
        self.providers: tuple[str, ...] = tuple(d.provider for d in deps)
        self.price_input = _floats(d.price_input for d in deps)
        self.price_cached_input = _floats(d.price_cached_input for d in deps)
        self.price_output = _floats(d.price_output for d in deps)
        self.ttft_s = _floats(d.ttft_s for d in deps)
        self.inv_tps = _floats(1.0 / d.decode_tps for d in deps)
        self.context_window = _floats(d.context_window for d in deps)
        self.max_output_tokens = _floats(d.model.max_output_tokens for d in deps)
        self._quality: dict[str | None, FloatArray] = {None: _floats(d.model.quality for d in deps)}
        for category in CATEGORIES:
            self._quality[category] = _floats(d.model.quality_for(category) for d in deps)
        self._quality_lists: dict[str | None, list[float]] = {
            k: v.tolist() for k, v in self._quality.items()
        }
        self._caps: dict[frozenset[str], BoolArray] = {}
        for r in range(len(CAPABILITIES) + 1):
            for combo in combinations(CAPABILITIES, r):
                need = frozenset(combo)
                self._caps[need] = np.fromiter(
                    (need <= d.capabilities for d in deps), dtype=np.bool_, count=len(deps)
                )
        self._by_model: dict[str, tuple[int, ...]] = {}
        for i, d in enumerate(deps):
            self._by_model[d.model.name] = (*self._by_model.get(d.model.name, ()), i)
        self._models: dict[frozenset[str], BoolArray] = {}
        # Per deployment: the indexes of its model's deployments (itself included).
        self.same_model: tuple[tuple[int, ...], ...] = tuple(
            self._by_model[d.model.name] for d in deps
        )
        self.all_true: BoolArray = np.ones(len(deps), dtype=np.bool_)
        # Columns [p_in, p_out, ttft, 1/tps]: U = q - matrix @ [λc·n_in, λc·n_out, λl, λl·n_out]
        self.matrix: FloatArray = np.ascontiguousarray(
            np.stack([self.price_input, self.price_output, self.ttft_s, self.inv_tps], axis=1)
            if deps
            else np.zeros((0, 4))
        )
        self.price_input_list: list[float] = self.price_input.tolist()
        self.price_output_list: list[float] = self.price_output.tolist()
        self.price_cached_list: list[float] = self.price_cached_input.tolist()
        self._hard: dict[tuple[frozenset[str], frozenset[str] | None], BoolArray] = {}
        # Distinct context windows, ascending: which deployments hold N tokens depends only on
        # the smallest window >= N, so the feasible-set memo is keyed by that window's rank.
        self._windows: list[float] = sorted(set(self.context_window.tolist()))
        self._feasible: dict[
            tuple[frozenset[str], frozenset[str] | None, str, float, int],
            tuple[IntArray, FloatArray],
        ] = {}
        # Prompt-cache writes (see write_surcharge): every (policy setting, rank of the
        # prompt's length among the distinct minimums) precomputed; None = nothing anywhere.
        self._cache_mins: list[int] = sorted({d.prompt_cache_min_tokens for d in deps})
        self._surcharges: dict[tuple[bool | None, int], Surcharge | None] = {}
        for setting in (None, True, False):
            for rank in range(len(self._cache_mins) + 1):
                reached = self._cache_mins[:rank]
                extra = _floats(
                    _write_surcharge(d) if d.caches_prompt(setting) else 0.0 for d in deps
                )
                extra *= np.fromiter(
                    (d.prompt_cache_min_tokens in reached for d in deps),
                    dtype=np.bool_,
                    count=len(deps),
                )
                self._surcharges[(setting, rank)] = (extra, extra.tolist()) if extra.any() else None

    def __len__(self) -> int:
        return len(self.deployments)

    def quality_for(self, category: str | None) -> FloatArray:
        """Each deployment's model quality for a task category (overall when unknown)."""
        return self._quality.get(category, self._quality[None])

    def quality_list(self, category: str | None) -> list[float]:
        """:meth:`quality_for` as plain floats (for reading a few entries cheaply)."""
        return self._quality_lists.get(category, self._quality_lists[None])

    def capability_mask(self, needs: frozenset[str]) -> BoolArray:
        """Deployments that have every capability in ``needs``."""
        mask = self._caps.get(needs)
        if mask is None:  # a capability outside the known set: nobody has it
            mask = np.fromiter(
                (needs <= d.capabilities for d in self.deployments),
                dtype=np.bool_,
                count=len(self.deployments),
            )
            self._caps[needs] = mask
        return mask

    def model_mask(self, models: frozenset[str] | None) -> BoolArray:
        """Deployments whose model is in ``models`` (all when ``None``); memoised."""
        if models is None:
            return self.all_true
        mask = self._models.get(models)
        if mask is None:
            mask = np.fromiter(
                (name in models for name in self.model_names),
                dtype=np.bool_,
                count=len(self.model_names),
            )
            self._models[models] = mask
        return mask

    def static_mask(self, needs: frozenset[str], models: frozenset[str] | None) -> BoolArray:
        """Capability and model masks combined (memoised per (needs, models))."""
        key = (needs, models)
        mask = self._hard.get(key)
        if mask is None:
            mask = self.capability_mask(needs) & self.model_mask(models)
            self._hard[key] = mask
        return mask

    def feasible(
        self,
        needs: frozenset[str],
        models: frozenset[str] | None,
        category: str,
        quality_floor: float,
        required_context: int,
    ) -> tuple[IntArray, FloatArray]:
        """Deployments that pass the request-independent constraints — model, capabilities,
        context window (``>= required_context``) and ``quality_for(category) >= quality_floor``
        — as ascending indexes, with minus their quality (the planner's tie-break sort key).

        Memoised per (needs, models, category, floor, context-window rank): a routing decision
        pays one dict look-up for what would be five array operations.
        """
        rank = bisect_left(self._windows, required_context)
        key = (needs, models, category, quality_floor, rank)
        hit = self._feasible.get(key)
        if hit is not None:
            return hit
        quality = self.quality_for(category)
        mask = (
            self.static_mask(needs, models)
            & (self.context_window >= required_context)
            & (quality >= quality_floor)
        )
        idx = mask.nonzero()[0]
        hit = (idx, -quality[idx])
        if len(self._feasible) >= MAX_FEASIBLE_SETS:
            self._feasible.clear()
        self._feasible[key] = hit
        return hit

    def write_surcharge(self, setting: bool | None, input_tokens: int) -> Surcharge | None:
        """What each deployment bills per input token above its input price because it
        writes the prompt to its cache: ``cache_write - input`` where the gateway marks this
        request's prompt for caching (:meth:`Deployment.caches_prompt` under the policy's
        ``setting``) and the prompt is at least the deployment's ``prompt_cache_min_tokens``;
        0 elsewhere. None when that is 0 everywhere (no Anthropic deployment caches: the
        common case). A dict look-up: every combination is computed when the table is built.
        """
        return self._surcharges.get((setting, bisect_right(self._cache_mins, input_tokens)))

    def deployments_of(self, model: str) -> tuple[int, ...]:
        """Indexes of a model's deployments."""
        return self._by_model.get(model, ())

    def expand_models(self, by_model: Mapping[str, float], default: float = 0.0) -> FloatArray:
        """A per-model score mapping (e.g. a learned quality predictor's) as a column."""
        return _floats(by_model.get(name, default) for name in self.model_names)


def _write_surcharge(dep: Deployment) -> float:
    """A prompt-cache write's price above the input price (USD per token, 5-minute cache:
    the gateway's breakpoints ask for no longer)."""
    write = dep.price_cache_write
    return 0.0 if write is None else write - dep.price_input


def _floats(values: Iterable[float]) -> FloatArray:
    return np.fromiter(values, dtype=np.float64)
