"""The sim-to-real gap: one policy, the same questions, several engines, paired differences against a real one.

A policy trained against a simulator (or against itself, `self`) is meant to be used with a real engine.
How much its score depends on which engine answers is the gap this measures:

    for each engine e (the first is the real reference, e.g. bm25):
        run_eval(search-agent, same questions, same protocol except the engine)   -> out/<e>/
    for each question q:  d_e(q) = EM_e(q) - EM_ref(q)   (and F1)
    gap_e = mean_q d_e(q),  s.e. = sd_q(d_e) / sqrt(n)   (paired: the question's difficulty cancels)

plus how often e turned a wrong answer right (+) or a right one wrong (-). Every run records its protocol
(zerosearch.evaluation.protocol); the table is refused if the runs differ in anything but the engine and its corpus.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from zerosearch.data.qa import QARecord
from zerosearch.engines import EngineConfig, build_engine
from zerosearch.engines.self_search import bind_policy
from zerosearch.evaluation.eval import EvalConfig, run_eval
from zerosearch.io import atomic_write_text, read_jsonl
from zerosearch.evaluation.protocol import check_comparable

# The engine names `zerosearch gap --engines` takes, as EngineConfig fields over the command's engine flags.
PRESETS: dict[str, dict[str, Any]] = {
    "bm25": {"name": "bm25"},
    "dense": {"name": "dense"},
    "http": {"name": "http"},
    "serpapi": {"name": "serpapi"},
    "simulated-blind": {"name": "simulated", "answer_blind": True},
    "self": {"name": "self"},
}


def engine_configs(specs: Sequence[str], base: EngineConfig) -> list[tuple[str, EngineConfig]]:
    """(label, config) per spec: a preset name, or a YAML file of engine fields (labelled by its stem)."""
    out = []
    for spec in specs:
        if spec in PRESETS:
            out.append((spec, dataclasses.replace(base, **PRESETS[spec])))
        elif spec.endswith((".yaml", ".yml")) and Path(spec).is_file():
            cfg = EngineConfig.from_yaml(spec)
            out.append((Path(spec).stem, dataclasses.replace(cfg, corpus=cfg.corpus or base.corpus)))
        else:
            raise ValueError(f"--engines: {spec!r} is neither one of {', '.join(PRESETS)} nor a YAML file")
    labels = [label for label, _ in out]
    if len(set(labels)) != len(labels):
        raise ValueError(f"--engines names an engine twice: {', '.join(labels)}")
    if out and out[0][1].name in ("simulated", "self"):
        raise ValueError(f"the first engine is the reference the gap is measured against: a real one "
                         f"({', '.join(n for n in PRESETS if n not in ('simulated-blind', 'self'))}), not {out[0][0]!r}")
    return out


def run_gap(records: Sequence[QARecord], backend: Any, tokenizer: Any, engines: Sequence[tuple[str, EngineConfig]],
            cfg: EvalConfig, out: str | Path, *, meta: dict[str, Any] | None = None,
            progress: Any = None) -> dict[str, Any]:
    """Evaluate the policy as a search agent with each engine into out/<label>/ (resumable), then pair."""
    if cfg.methods != ["search-agent"]:
        raise ValueError("the gap is measured on the search agent: EvalConfig(methods=['search-agent'])")
    out = Path(out)
    results = {}
    for label, ecfg in engines:
        engine = build_engine(dataclasses.replace(ecfg, k=cfg.k))
        try:
            bind_policy(engine, backend, tokenizer)
            results[label] = run_eval(records, backend, tokenizer, engine, cfg, out / label, meta=meta,
                                      progress=progress)
        finally:
            engine.close()
    check_comparable([(label, r["protocol"]) for label, r in results.items()], {"engine", "corpus"})
    preds = {label: _by_question(read_jsonl(out / label / "predictions.jsonl"), records) for label in results}
    gap = paired_gap(preds)
    gap["protocol"] = {label: r["protocol"] for label, r in results.items()}
    atomic_write_text(out / "gap.json", json.dumps(gap, indent=2, ensure_ascii=False) + "\n")
    atomic_write_text(out / "gap.md", gap_table(gap) + "\n")
    return gap


def _by_question(rows: list[dict[str, Any]], records: Sequence[QARecord]) -> dict[tuple[str, str], dict[str, Any]]:
    want = {(r.data_source, r.id) for r in records}
    return {(p["dataset"], p["id"]): p for p in rows if p["method"] == "search-agent" and (p["dataset"], p["id"]) in want}


def paired_gap(preds: dict[str, dict[tuple[str, str], dict[str, Any]]]) -> dict[str, Any]:
    """{"reference", "n", "engines": {label: {em, f1, searches, answered, d_em, se_em, d_f1, se_f1, gained,
    lost}}} from per-question predictions of each engine (the first is the reference)."""
    labels = list(preds)
    ref = labels[0]
    keys = sorted(set.intersection(*(set(p) for p in preds.values())))
    if not keys:
        raise ValueError("no question was evaluated with every engine")
    rows: dict[str, Any] = {}
    for label in labels:
        p = preds[label]
        em = [float(p[k]["em"]) for k in keys]
        f1 = [float(p[k]["f1"]) for k in keys]
        row = {"em": _mean(em), "f1": _mean(f1), "searches": _mean(float(p[k]["searches"]) for k in keys),
               "answered": _mean(float(p[k]["prediction"] is not None) for k in keys)}
        if label != ref:
            d_em = [e - float(preds[ref][k]["em"]) for e, k in zip(em, keys)]
            d_f1 = [f - float(preds[ref][k]["f1"]) for f, k in zip(f1, keys)]
            row.update(d_em=_mean(d_em), se_em=_se(d_em), d_f1=_mean(d_f1), se_f1=_se(d_f1),
                       gained=sum(d > 0 for d in d_em), lost=sum(d < 0 for d in d_em))
        rows[label] = row
    return {"reference": ref, "n": len(keys), "engines": rows}


def _mean(xs: Any) -> float:
    xs = list(xs)
    return sum(xs) / len(xs) if xs else 0.0


def _se(xs: list[float]) -> float:
    """Standard error of the mean (sample standard deviation / sqrt(n)); 0 for one value."""
    n = len(xs)
    if n < 2:
        return 0.0
    m = _mean(xs)
    return math.sqrt(sum((x - m) ** 2 for x in xs) / (n - 1) / n)


def gap_table(gap: dict[str, Any]) -> str:
    ref, n = gap["reference"], gap["n"]
    lines = [f"| engine | EM | F1 | EM - {ref} (s.e.) | F1 - {ref} (s.e.) | right->wrong / wrong->right | searches | answered |",
             "|---" * 8 + "|"]
    for label, r in gap["engines"].items():
        if label == ref:
            diff = ("(reference)", "(reference)", "-")
        else:
            diff = (f"{100 * r['d_em']:+.1f} ({100 * r['se_em']:.1f})", f"{100 * r['d_f1']:+.1f} ({100 * r['se_f1']:.1f})",
                    f"{r['lost']} / {r['gained']}")
        lines.append(f"| {label} | {100 * r['em']:.1f} | {100 * r['f1']:.1f} | {diff[0]} | {diff[1]} | {diff[2]} | "
                     f"{r['searches']:.2f} | {100 * r['answered']:.0f}% |")
    lines += ["", f"x 100; {n} questions, each evaluated with every engine (search agent, same protocol except the "
              f"engine); differences are paired per question, s.e. = sd / sqrt(n)."]
    return "\n".join(lines)
