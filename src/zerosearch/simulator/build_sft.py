"""From labelled trajectories to the simulator's SFT set.

Every search of a trajectory gives one (query, documents) pair, labelled *useful* when the trajectory
answered correctly and *noisy* when it did not (the paper's labelling). Each pair becomes one SFT example
rendered with exactly the text the simulator is served with (`render_sim_prompt`, SFT family, told the
question and gold answer; the completion in the simulator's `Doc i: ...` output format after the
`Doc 1:` prefix the engine supplies), so what is learned is what will be asked.

Cleaning, all counted: searches whose documents are empty or a fallback are skipped; pairs are
de-duplicated on (question, normalised query, label); a query that occurs with both labels for the same
question is ambiguous and dropped; `balance` down-samples the larger label (seeded).
"""

from __future__ import annotations

import random
from collections import Counter
from pathlib import Path
from typing import Any

from zerosearch.engines.sim_prompts import prompt_answer, render_documents, render_sim_prompt
from zerosearch.engines.simulated import REPLY_PREFIX
from zerosearch.io import read_jsonl
from zerosearch.reward import normalize_answer

_FIELDS = {"id": str, "question": str, "golden_answers": list, "label": str, "searches": list}


def read_trajectories(path: str | Path) -> list[dict[str, Any]]:
    """`zerosearch collect` output, checked: a bad row names its line and field."""
    rows = read_jsonl(path)
    for i, row in enumerate(rows, start=1):
        for name, kind in _FIELDS.items():
            if not isinstance(row.get(name), kind):
                raise ValueError(f"{path}:{i}: field {name!r} missing or not a {kind.__name__}")
        if row["label"] not in ("positive", "negative"):
            raise ValueError(f"{path}:{i}: field 'label' must be 'positive' or 'negative', got {row['label']!r}")
        for j, s in enumerate(row["searches"]):
            if not isinstance(s, dict) or not isinstance(s.get("query"), str) or not isinstance(s.get("documents"), list):
                raise ValueError(f"{path}:{i}: searches[{j}] needs a 'query' string and a 'documents' list")
    return rows


def example(question: str, answer: str, query: str, docs: list[str], mode: str, *, words: int) -> dict[str, Any]:
    """One SFT example (zerosearch.sft format): the served prompt, then the documents, loss on the documents."""
    target = render_documents(docs)
    assert target.startswith(REPLY_PREFIX)  # render_documents writes "Doc 1: ..." for untitled documents
    return {"prompt": render_sim_prompt(query, len(docs), mode, question, answer, words=words, family="sft"),
            "segments": [[REPLY_PREFIX, False], [target[len(REPLY_PREFIX):], True]], "mode": mode}


def build_sft(trajectories: list[dict[str, Any]], *, balance: bool = False, max_per_label: int | None = None,
              words: int = 30, seed: int = 0) -> tuple[list[dict[str, Any]], dict[str, int]]:
    counts: Counter[str] = Counter()
    pairs: dict[tuple[str, str, str], dict[str, Any]] = {}
    for t in trajectories:
        mode = "useful" if t["label"] == "positive" else "noisy"
        answer = prompt_answer(t["golden_answers"])
        for s in t["searches"]:
            counts["pairs_seen"] += 1
            docs = [d["text"] for d in s["documents"] if d.get("text", "").strip() and not d.get("meta", {}).get("fallback")]
            if not docs or answer is None or not s["query"].strip():
                counts["skipped_empty"] += 1
                continue
            key = (t["id"], normalize_answer(s["query"]), mode)
            if key in pairs:
                counts["duplicates"] += 1
                continue
            pairs[key] = example(t["question"], answer, s["query"], docs, mode, words=words)
    both = {(q, n) for (q, n, m) in pairs if m == "useful"} & {(q, n) for (q, n, m) in pairs if m == "noisy"}
    kept = [ex for (q, n, m), ex in pairs.items() if (q, n) not in both]
    counts["conflicts_dropped"] = 2 * len(both)
    by_mode = {m: [ex for ex in kept if ex["mode"] == m] for m in ("useful", "noisy")}
    cap = min(len(v) for v in by_mode.values()) if balance else None
    if max_per_label is not None:
        cap = min(cap, max_per_label) if cap is not None else max_per_label
    rng = random.Random(seed)
    if cap is not None:
        by_mode = {m: (rng.sample(v, cap) if len(v) > cap else v) for m, v in by_mode.items()}
    out = by_mode["useful"] + by_mode["noisy"]
    rng.shuffle(out)
    counts.update(useful=len(by_mode["useful"]), noisy=len(by_mode["noisy"]), written=len(out))
    return out, dict(counts)
