"""The learned quality scorer: hashed word n-grams → per-model quality, a linear head each.

Pure code on the request path (no I/O after loading, no network). A request's text is
lower-cased and split into words and punctuation; unigrams, bigrams and a few shape tokens
(length bucket, message count, roles) are hashed with CRC-32 into ``dim`` buckets, counted and
L2-normalised. Each model ``m`` has weights ``W[:, m]`` and a bias ``b[m]``; its predicted
quality is ``sigmoid(b[m] + Σ_j x_j·W[j, m])``, a number in [0, 1] on the same scale as the
catalog's quality scores, so the policy can use it as ``q`` in ``U = q − λ_cost·c − λ_lat·l``.

The file (``pareto train … -o router.bin``) is a compressed numpy archive: ``W`` (float32,
``dim × models``), ``b``, and ``meta`` (JSON: format version, featurizer, models, training
data, cross-validated metrics, calibration). numpy is imported only when a scorer is built.
"""

from __future__ import annotations

import json
import math
import re
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from app.errors import RouterFileError
from app.tokens import content_text

FORMAT_VERSION = 1
DEFAULT_DIM = 1 << 17
# Long prompts are read from both ends only, so the cost per request is bounded.
HEAD_CHARS = 2000
TAIL_CHARS = 500
# Word → CRC-32 memo bound (per scorer / per training run): words repeat, hashing does not.
MAX_CACHED_WORDS = 200_000
_TOKEN = re.compile(r"\w+|[^\w\s]")
_START = 0x9E3779B9
_MIX = 0x01000193


@dataclass(frozen=True, slots=True)
class SparseFeatures:
    """Hashed bucket indices (int64, sorted, unique) with L2-normalised float32 values."""

    indices: Any
    values: Any


def request_text(messages: Iterable[Mapping[str, Any]]) -> tuple[str, int, tuple[str, ...]]:
    """Concatenated text, total characters, and roles of a message list."""
    parts: list[str] = []
    roles: list[str] = []
    for message in messages:
        parts.append(content_text(message.get("content")))
        roles.append(str(message.get("role", "")))
    text = "\n".join(parts)
    return text, len(text), tuple(roles)


def _shape_tokens(n_chars: int, roles: tuple[str, ...]) -> list[str]:
    shape = [
        f"__len{int(math.log2(n_chars + 1))}",
        f"__msgs{min(len(roles), 8)}",
        f"__last_{roles[-1] if roles else 'none'}",
    ]
    shape.extend(f"__role_{r}" for r in sorted(set(roles)))
    return shape


def featurize(
    messages: Iterable[Mapping[str, Any]],
    dim: int = DEFAULT_DIM,
    cache: dict[str, int] | None = None,
) -> SparseFeatures:
    """Hashed, L2-normalised unigram + bigram + shape features of a request.

    Unigrams are ``crc32(word)``; a bigram mixes its two words' hashes arithmetically (no
    string building); all are reduced modulo ``dim``. ``cache`` memoises word hashes.
    """
    import numpy as np

    text, n_chars, roles = request_text(messages)
    if n_chars > HEAD_CHARS + TAIL_CHARS:
        text = text[:HEAD_CHARS] + " " + text[-TAIL_CHARS:]
    words = _TOKEN.findall(text.lower())
    memo = cache if cache is not None else {}
    crc = zlib.crc32
    ids = []
    for word in words:
        h = memo.get(word)
        if h is None:
            h = crc(word.encode())
            if len(memo) < MAX_CACHED_WORDS:
                memo[word] = h
        ids.append(h)
    uni = np.array(ids, dtype=np.uint64)
    prev = np.empty_like(uni)
    if len(uni):
        prev[0] = _START
        prev[1:] = uni[:-1]
    bi = (prev * np.uint64(_MIX) + uni + np.uint64(1)) & np.uint64(0xFFFFFFFF)
    shape = np.array([crc(t.encode()) for t in _shape_tokens(n_chars, roles)], dtype=np.uint64)
    buckets = np.concatenate([uni, bi, shape]) % np.uint64(dim)
    idx, counts = np.unique(buckets.astype(np.int64), return_counts=True)
    values = counts.astype(np.float32)
    values /= np.float32(np.sqrt(float(np.dot(values, values))))
    return SparseFeatures(idx, values)


class LearnedScorer:
    """Per-model quality predictions from a trained router file (see module docstring)."""

    __slots__ = ("_b", "_cache", "_np", "_w", "dim", "index", "meta", "models")

    def __init__(self, weights: Any, bias: Any, models: tuple[str, ...], meta: dict[str, Any]):
        import numpy as np

        self._np = np
        self._w = np.ascontiguousarray(weights, dtype=np.float32)
        self._b = np.asarray(bias, dtype=np.float64)
        self.models = models
        self.index = {m: i for i, m in enumerate(models)}
        self.dim = int(self._w.shape[0])
        self.meta = meta
        self._cache: dict[str, int] = {}

    @classmethod
    def load(cls, path: Path | str) -> LearnedScorer:
        """Read a file written by ``pareto train``; :class:`RouterFileError` says what is wrong."""
        import numpy as np

        try:
            with np.load(Path(path), allow_pickle=False) as data:
                meta = json.loads(str(data["meta"]))
                weights, bias = data["W"], data["b"]
        except (OSError, KeyError, ValueError) as exc:
            raise RouterFileError(
                f"{path}: not a learned-router file ({exc}); create one with `pareto train`"
            ) from exc
        if meta.get("format_version") != FORMAT_VERSION:
            raise RouterFileError(
                f"{path}: format version {meta.get('format_version')} is not "
                f"{FORMAT_VERSION}; retrain with this gateway's `pareto train`"
            )
        models = tuple(meta["models"])
        if weights.shape != (meta["dim"], len(models)) or bias.shape != (len(models),):
            raise RouterFileError(f"{path}: weight shapes do not match the model list")
        return cls(weights, bias, models, meta)

    def save(self, path: Path | str) -> None:
        """Write the compressed archive (the file name is kept as given, e.g. ``router.bin``)."""
        meta = dict(self.meta, format_version=FORMAT_VERSION, dim=self.dim, models=self.models)
        with open(path, "wb") as fh:
            self._np.savez_compressed(
                fh, W=self._w, b=self._b, meta=self._np.array(json.dumps(meta))
            )

    def predict_features(self, features: SparseFeatures) -> Any:
        """Predicted quality per model (numpy array in ``self.models`` order)."""
        np = self._np
        z = self._b + features.values @ self._w[features.indices]
        return 1.0 / (1.0 + np.exp(-z))

    def predict(self, messages: Iterable[Mapping[str, Any]]) -> dict[str, float]:
        """``{model: predicted quality}`` for a request's messages."""
        q = self.predict_features(featurize(messages, self.dim, self._cache))
        return {m: float(q[i]) for i, m in enumerate(self.models)}


class LearnedQuality:
    """The routing plan's quality estimate for one request, from a learned scorer.

    Deployments of models the scorer predicts get ``100 × predicted quality`` (the catalog's
    0-100 scale); any other deployment keeps the catalog's quality for the request's category.
    Implements the routing package's ``QualityEstimator`` protocol.
    """

    __slots__ = ("_np", "predicted")

    def __init__(self, scorer: LearnedScorer, messages: Iterable[Mapping[str, Any]]) -> None:
        import numpy as np

        self._np = np
        self.predicted = {m: 100.0 * q for m, q in scorer.predict(messages).items()}

    def estimate(self, table: Any, features: Any) -> Any:
        np = self._np
        known = table.expand_models(self.predicted, default=np.nan)
        return np.where(np.isnan(known), table.quality_for(features.category), known)
