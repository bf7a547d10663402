"""The policy's cold start: a short SFT on demonstrations of the search protocol.

A 135M model given the search-agent prompt almost never writes `<search>` or `<answer>` (measured: 0 of
32 samples at T=1 on the synthetic world), so every GRPO group scores 0 and RL has no signal to follow.
Like DeepSeek-R1's cold start, a few hundred demonstrations teach the *format* first:

    <think> ... </think>
    <search> the question </search>            (loss)
    <information> real top-k documents </information>   (no loss: the policy never writes these)
    <think> ... </think>
    <answer> the gold answer </answer>        (loss)

Documents come from a real engine; a demonstration is kept only when the gold answer is in them, so the
policy learns to answer *from the documents*, never from nowhere. RL then starts from this checkpoint.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from zerosearch.data import QARecord
from zerosearch.engines.base import SearchEngine, SearchRequest, format_documents
from zerosearch.prompts import INFORMATION, SEARCH_AGENT
from zerosearch.reward import normalize_answer


def demonstrations(records: Sequence[QARecord], engine: SearchEngine, k: int = 3,
                   batch: int = 256) -> tuple[list[dict[str, Any]], int]:
    """SFT examples (see zerosearch.sft) for the records whose gold answer the engine retrieves; and how
    many records were skipped because it did not."""
    out: list[dict[str, Any]] = []
    skipped = 0
    for s in range(0, len(records), batch):
        chunk = records[s: s + batch]
        results = engine.search([SearchRequest(r.question, k=k) for r in chunk])
        for rec, docs in zip(chunk, results):
            text = format_documents(docs)
            gold = next((g for g in rec.golden_answers if normalize_answer(g) in normalize_answer(text)), None)
            if gold is None:
                skipped += 1
                continue
            out.append({"prompt": SEARCH_AGENT.format(question=rec.question.strip()), "segments": [
                [f"<think> I do not know this, so I will search. </think>\n<search> {rec.question.strip()} </search>", True],
                [INFORMATION.format(documents=text), False],
                [f"<think> The documents answer the question. </think>\n<answer> {gold} </answer>", True],
            ], "id": rec.id})
    return out, skipped


def warm_start(model: str, records: Sequence[QARecord], engine: SearchEngine, out: str | Path, cfg: Any, *,
               examples: int, k: int = 3, resume: bool = False, progress: bool = True) -> dict[str, Any]:
    """The whole cold start: demonstrations from up to 2 x `examples` records (the engine misses some
    answers), the first `examples` kept in out/demos.jsonl, then SFT of `model` on them (cfg: SFTConfig).
    Returns zerosearch.sft's summary; its "model" is the warmed-up policy."""
    from zerosearch.data import subsample
    from zerosearch.io import atomic_write_jsonl
    from zerosearch.sft import sft

    demos, skipped = demonstrations(subsample(list(records), examples * 2, seed=cfg.seed), engine, k=k)
    demos = demos[:examples]
    atomic_write_jsonl(Path(out) / "demos.jsonl", demos)
    print(f"demonstrations: {len(demos)} (skipped {skipped} whose gold answer the engine did not retrieve)")
    return sft(model, demos, out, cfg, resume=resume, progress=progress)
