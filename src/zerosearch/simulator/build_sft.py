"""From labelled trajectories to the simulator's SFT set.

Every search of a trajectory gives one (query, documents) pair, labelled *useful* when the trajectory
answered correctly and *noisy* when it did not (the paper's labelling). Each pair becomes one SFT example
rendered with exactly the text the simulator is served with (`render_sim_prompt`, SFT family, told the
question and gold answer; the completion in the simulator's `Doc i: ...` output format after the
`Doc 1:` prefix the engine supplies), so what is learned is what will be asked. A completion that
`parse_documents` would not read back as the same documents (a document whose text looks like a
`Doc N:` marker or a prompt label) would teach the simulator output that serving mangles: it is skipped.

Cleaning, all counted: searches whose documents are empty or a fallback are skipped; pairs are
de-duplicated on (question, normalised query, label); a query that occurs with both labels for the same
question is ambiguous and dropped; `balance` down-samples the larger label (seeded).
"""

from __future__ import annotations

import random
from collections import Counter
from pathlib import Path
from typing import Any

from zerosearch.engines.sim_prompts import parse_documents, prompt_answer, render_documents, render_sim_prompt
from zerosearch.engines.simulated import REPLY_PREFIX
from zerosearch.io import read_jsonl
from zerosearch.reward import cover_exact_match, normalize_answer

_FIELDS = {"id": str, "question": str, "golden_answers": list, "label": str, "searches": list}


def read_trajectories(path: str | Path) -> list[dict[str, Any]]:
    """`zerosearch collect` output, checked: a bad row names its file, line and field."""
    rows = read_jsonl(path)
    for i, row in enumerate(rows, start=1):
        for name, kind in _FIELDS.items():
            if not isinstance(row.get(name), kind):
                raise ValueError(f"{path}:{i}: field {name!r} missing or not a {kind.__name__}")
        if not all(isinstance(a, str) for a in row["golden_answers"]):
            raise ValueError(f"{path}:{i}: field 'golden_answers' must be a list of strings")
        if row["label"] not in ("positive", "negative"):
            raise ValueError(f"{path}:{i}: field 'label' must be 'positive' or 'negative', got {row['label']!r}")
        for j, s in enumerate(row["searches"]):
            if not (isinstance(s, dict) and isinstance(s.get("query"), str) and isinstance(s.get("documents"), list)):
                raise ValueError(f"{path}:{i}: field 'searches[{j}]' needs a 'query' string and a 'documents' list")
            if not all(isinstance(d, dict) and isinstance(d.get("text"), str) for d in s["documents"]):
                raise ValueError(f"{path}:{i}: field 'searches[{j}].documents' must be documents with a 'text' string")
    return rows


def example(question: str, answer: str, query: str, docs: list[str], mode: str, *, words: int) -> dict[str, Any] | None:
    """One SFT example (zerosearch.training.sft format): the served prompt, then the documents, loss on the documents.
    None when the rendered documents would not parse back unchanged."""
    target = render_documents(docs)
    parsed, info = parse_documents(target, len(docs))
    if info.repairs() or [(d.title, d.text) for d in parsed] != [("", d) for d in docs]:
        return None
    return {"prompt": render_sim_prompt(query, len(docs), mode, question, answer, words=words, family="sft"),
            "segments": [[REPLY_PREFIX, False], [target.removeprefix(REPLY_PREFIX), True]], "mode": mode}


def build_sft(trajectories: list[dict[str, Any]], *, balance: bool = False, max_per_label: int | None = None,
              words: int = 30, seed: int = 0, label_by: str = "outcome") -> tuple[list[dict[str, Any]], dict[str, int]]:
    """(SFT examples, counts): pairs_seen, skipped_empty, skipped_unparseable, duplicates, conflicts_dropped
    (pairs of a query labelled both ways), useful, noisy, written.

    `label_by="outcome"` (the paper): useful iff the trajectory answered correctly. `label_by="docs"`: useful
    iff the documents themselves contain a gold answer; measured on the synthetic world, half of the failed
    trajectories had the answer in their documents, which makes outcome labels noisy for a weak policy."""
    if label_by not in ("outcome", "docs"):
        raise ValueError(f"label_by must be 'outcome' or 'docs', got {label_by!r}")
    if max_per_label is not None and max_per_label < 1:
        raise ValueError(f"max_per_label must be >= 1, got {max_per_label}")
    counts: Counter[str] = Counter(pairs_seen=0, skipped_empty=0, skipped_unparseable=0, duplicates=0)
    pairs: dict[tuple[str, str, str], dict[str, Any]] = {}
    for t in trajectories:
        mode = "useful" if t["label"] == "positive" else "noisy"
        answer = prompt_answer(t["golden_answers"])
        for s in t["searches"]:
            counts["pairs_seen"] += 1
            # One paragraph per document: the simulator's format has no room for line breaks inside one.
            docs = [" ".join(d["text"].split()) for d in s["documents"] if not (d.get("meta") or {}).get("fallback")]
            docs = [d for d in docs if d]
            if not docs or answer is None or not s["query"].strip():
                counts["skipped_empty"] += 1
                continue
            if label_by == "docs":
                mode = "useful" if cover_exact_match(" ".join(docs), t["golden_answers"]) else "noisy"
            key = (t["id"], normalize_answer(s["query"]), mode)
            if key in pairs:
                counts["duplicates"] += 1
                continue
            ex = example(t["question"], answer, s["query"], docs, mode, words=words)
            if ex is None:
                counts["skipped_unparseable"] += 1
                continue
            pairs[key] = ex
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
