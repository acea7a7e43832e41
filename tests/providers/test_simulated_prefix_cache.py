"""The simulated provider's prompt cache gives the hit ratios a real provider would."""

from __future__ import annotations

from typing import Any

from app.providers.simulated import PrefixCache
from app.tokens import estimate_messages_tokens


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def chat_turns(n: int) -> list[list[dict[str, Any]]]:
    """The prompts of an n-turn chat that resends its history."""
    messages: list[dict[str, Any]] = [{"role": "system", "content": "You help with code. " * 10}]
    prompts = []
    for turn in range(n):
        messages.append({"role": "user", "content": f"question {turn}: " + "why so? " * 12})
        prompts.append(list(messages))
        messages.append({"role": "assistant", "content": "because " * 60})
    return prompts


def test_ten_turn_chat_hit_ratio_climbs_to_about_ninety_percent() -> None:
    cache = PrefixCache()
    ratios = []
    total = cached = 0
    for prompt in chat_turns(10):
        n = estimate_messages_tokens(prompt)
        hit = cache.lookup_and_store(prompt)
        ratios.append(hit / n)
        total, cached = total + n, cached + hit
    assert ratios[0] == 0
    assert all(b > a for a, b in zip(ratios, ratios[1:], strict=False))
    assert ratios[-1] > 0.85
    assert cached / total > 0.7


def test_a_deployment_that_missed_the_last_turn_pays_full_price_then_rewarms() -> None:
    prompts = chat_turns(4)
    warm, cold = PrefixCache(), PrefixCache()
    for prompt in prompts[:3]:
        warm.lookup_and_store(prompt)
    cold.lookup_and_store(prompts[0])  # saw turn 1 only
    assert warm.lookup_and_store(prompts[3]) == estimate_messages_tokens(prompts[2])
    assert cold.lookup_and_store(prompts[3]) == estimate_messages_tokens(prompts[0])


def test_min_tokens_and_ttl() -> None:
    clock = Clock()
    prompts = chat_turns(3)
    cache = PrefixCache(min_tokens=10_000, clock=clock)
    assert [cache.lookup_and_store(p) for p in prompts] == [0, 0, 0]

    cache = PrefixCache(ttl_s=300, clock=clock)
    cache.lookup_and_store(prompts[0])
    clock.now += 299
    assert cache.lookup_and_store(prompts[1]) > 0
    clock.now += 301
    assert cache.lookup_and_store(prompts[2]) == 0
