"""veRL's custom reward function: `reward.custom_reward_function.path=pkg://zerosearch.integrations.verl.reward`
(name `compute_score`, the default).

The score is zerosearch's training reward (`zerosearch.reward.f1_reward`): token F1 of the answer the
*policy* wrote, 0 when it wrote none. veRL hands the reward function the whole decoded response, which
also holds the inserted documents (a retrieved document may contain `<answer>` tags), so:
- after the `zerosearch_agent` loop, the policy's own text comes in `extra_info` (the loop's
  extra fields) and is scored;
- otherwise (veRL's generic tool agent with the drop-in search tool) the text between
  `<information>`/`<tool_response>` tags is removed first.
EM, cover-EM and F1 ride along as extra metrics: veRL takes a dict with a `score` key and keeps the other
keys as `reward_extra_info` (reported per data source in validation, dumped with the generations). Every
call returns the same keys, as veRL stacks them across the batch.
"""

from __future__ import annotations

import re
from typing import Any

from zerosearch.integrations.common import score_policy

POLICY_TEXT_KEY = "zerosearch_policy_text"  # = agent_loop.POLICY_TEXT_KEY (this module must not import veRL)
_INSERTED = re.compile(r"<(information|tool_response)>.*?</\1>", re.DOTALL)


def gold_answers(ground_truth: Any) -> list[str]:
    """`reward_model.ground_truth` as zerosearch/Search-R1 write it: {"target": [...]}, a list, or one string."""
    if isinstance(ground_truth, dict):
        ground_truth = ground_truth.get("target")
    if ground_truth is None:
        return []
    if isinstance(ground_truth, str):
        return [ground_truth]
    return [str(g) for g in list(ground_truth)]  # lists, tuples, numpy arrays from parquet


def policy_text(solution_str: str, extra_info: dict[str, Any] | None) -> str:
    text = (extra_info or {}).get(POLICY_TEXT_KEY)
    return text if isinstance(text, str) else _INSERTED.sub("", solution_str)


def compute_score(data_source: str, solution_str: str, ground_truth: Any, extra_info: dict[str, Any] | None = None,
                  format_weight: float = 0.0, **_: Any) -> dict[str, float]:
    """{"score": the F1 reward, "f1", "em", "cover_em", "answered", "valid_format"}
    (`zerosearch.integrations.common.score_policy`). `format_weight` (Search-R1's format term, off by
    default) comes from `reward.custom_reward_function.reward_kwargs`."""
    golds = gold_answers(ground_truth)
    if not golds:
        raise ValueError(f"zerosearch compute_score: no gold answers in ground_truth={ground_truth!r} "
                         f"(data_source {data_source!r})")
    scores = score_policy(policy_text(solution_str, extra_info), golds, format_weight=format_weight)
    return {"score": scores.pop("reward"), **scores}
