"""TRL's reward function: zerosearch's F1 reward on the policy's own tokens (zerosearch.integrations.common)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from zerosearch.integrations.common import policy_text, score_policy


class ZeroSearchReward:
    """TRL reward function: zerosearch's F1 reward of the answer in the policy's OWN tokens (the mask-1
    tokens of each completion, passed as the `info_mask` column), never in retrieved or inserted text.
    EM, cover-EM, answered and format rates are logged through TRL's `log_metric`."""

    __name__ = "zerosearch_f1"

    def __init__(self, tokenizer: Any, format_weight: float = 0.0):
        self.tokenizer, self.format_weight = tokenizer, format_weight

    def __call__(self, prompts: list[Any], completions: list[Any], completion_ids: list[list[int]],
                 info_mask: list[list[int]], golden_answers: list[list[str]],
                 log_metric: Callable[[str, float], None] | None = None, **_: Any) -> list[float]:
        scores = [score_policy(policy_text(ids, mask, self.tokenizer), golds, format_weight=self.format_weight)
                  for ids, mask, golds in zip(completion_ids, info_mask, golden_answers)]
        if log_metric is not None and scores:
            for name in ("em", "cover_em", "f1", "answered", "valid_format"):
                log_metric(f"zerosearch/{name}", sum(s[name] for s in scores) / len(scores))
        return [s["reward"] for s in scores]
