"""Word lists the content heuristic reads: category cues, difficulty cues, language stopwords.

Plain data, built once at import (immutable constants, no state). Words are lower case and
matched whole (the request's text is split on whitespace after punctuation is stripped), so
every inflection that matters is listed explicitly: exact set look-ups are what keep the
heuristic at a few microseconds.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


# category -> words that point to it (weight 1 each; the strongest cues are doubled below).
CATEGORY_WORDS: Final[Mapping[str, frozenset[str]]] = {
    "code": _words("""
        code coding function functions class classes method methods bug bugs debug
        debugging refactor refactoring refactored compile compiler compiles python javascript
        typescript java rust golang go sql regex api implement implementation stacktrace
        traceback exception segfault def import variable variables repository repo endpoint
        script html css dockerfile kubernetes unittest pytest module modules codebase async
        await struct enum interface lint linter program programming runtime null pointer
        recursion"""),
    "math": _words("""
        prove proof proofs theorem lemma corollary integral integrals derivative derivatives
        equation equations solve calculate compute probability matrix matrices eigenvalue
        eigenvalues polynomial polynomials prime primes induction inequality algebra geometry
        calculus sqrt factorial modulo arithmetic integer integers divisible infinitely
        converge converges convergence limit vector vectors combinatorics"""),
    "extraction": _words("""
        extract extraction classify classification categorize categorise label labels
        sentiment entities entity parse fields tag tags detect json csv yaml schema
        structured"""),
    "summarization": _words("""
        summarize summarise summary summarization summarisation tl;dr tldr condense recap
        shorten gist bullet"""),
    "translation": _words("""translate translation translated translating translator"""),
    "creative": _words("""
        poem poems poetry story stories haiku sonnet lyrics song fiction novel limerick
        creative screenplay slogan tale fairy rhyme verse"""),
    "chat": _words("""hi hello hey thanks thank howdy yo chat lol joke weather morning"""),
}

# Cues that weigh double: they name the task outright.
STRONG_CUES: Final[frozenset[str]] = (
    _words("""refactor refactoring prove proof theorem translate translation summarize summarise
    summary tl;dr tldr poem haiku sonnet story extract classify""")
)

# Words that make a task harder than its length says (one point each, capped).
HARD_WORDS: Final[frozenset[str]] = (
    _words("""prove proof rigorous rigorously derive derivation optimize optimise refactor
    refactoring architecture concurrency concurrent distributed complexity formal formally
    invariant invariants induction theorem lemma tradeoffs trade-offs thread-safe
    lock-free scalable migrate migration asymptotic""")
)

# Phrases checked by substring on the lower-cased window (multi-step asks, hard cues).
MULTI_STEP_PHRASES: Final[tuple[str, ...]] = (
    "step by step",
    "step-by-step",
    "first,",
    "then,",
    "finally,",
    "and then",
    "after that",
    "edge case",
)

CONSTRAINT_WORDS: Final[frozenset[str]] = (
    _words("""must should ensure without exactly least most constraint constraints requirement
    requirements only never always""")
)

GREETING_WORDS: Final[frozenset[str]] = _words(
    """hi hello hey thanks thank howdy yo morning evening sup"""
)

# Stopwords that identify a Latin-script language (a few per language is enough).
STOPWORDS: Final[Mapping[str, frozenset[str]]] = {
    "en": _words("the and is are of to in that it with for you this what how"),
    "es": _words("el la los las de que y en es por para una un como qué"),
    "fr": _words("le la les de des et est un une que pour dans avec vous qui"),
    "de": _words("der die das und ist nicht ein eine zu mit für sie ich wie"),
    "pt": _words("o a os as de que e é um uma para com não você como"),
    "it": _words("il lo la gli le di che e è un una per con non come"),
}

# word -> ((category, weight), ...): one dict look-up per word read from the request.
WORD_CATEGORIES: Final[Mapping[str, tuple[tuple[str, float], ...]]] = {
    word: tuple(
        (name, 2.0 if word in STRONG_CUES else 1.0)
        for name, vocab in CATEGORY_WORDS.items()
        if word in vocab
    )
    for word in frozenset().union(*CATEGORY_WORDS.values())
}

ALL_WORDS: Final[frozenset[str]] = frozenset().union(
    *CATEGORY_WORDS.values(),
    HARD_WORDS,
    CONSTRAINT_WORDS,
    GREETING_WORDS,
    *STOPWORDS.values(),
)
