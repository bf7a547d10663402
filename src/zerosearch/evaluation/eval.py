"""Evaluation: exact match of a model on QA sets, as the search agent and as the paper's baselines.

    methods:  direct        answer from the model alone
              cot           think step by step, then answer
              r1            reason (no search), then answer: for policies RL-trained without an engine
              rag           top-k documents for the question, then answer
              search-agent  the multi-turn policy: <search> ... <information> ... <answer>

Honesty rules, enforced here rather than trusted to the caller:
- the engine never sees a gold answer: an engine that reads them (a simulator not in answer-blind
  mode) is refused, and every request is stripped to (query, k, row id) on its way to any engine;
- the result file records model, engine, data hash per dataset, seeds, the whole config and the
  protocol (`zerosearch.evaluation.protocol`: engine, corpus hash, k, turns, templates, split, sampling), and a
  resumed run must match them; `leaderboard-<method>.json` repeats the numbers in the SearchAgent-
  leaderboard layout.

Per-example results go to `predictions.jsonl`, appended (and fsynced) as each chunk of examples
finishes, so an interrupted eval continues where it stopped and the final table is the same as an
uninterrupted run's. The table has the paper's layout: one row per method, one column per dataset
(the records' `data_source`), plus the macro average over datasets.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import fcntl
import io
import json
import re
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from zerosearch.evaluation.behaviour import by_hops, hops_markdown
from zerosearch.data.qa import QARecord, data_hash
from zerosearch.engines.base import Document, SearchEngine, SearchRequest, format_documents
from zerosearch.io import append_jsonl, atomic_write_text, truncate_jsonl
from zerosearch.prompts import COT, DIRECT, R1, RAG, render_prompt
from zerosearch.evaluation.protocol import eval_protocol, protocol_markdown, write_leaderboard
from zerosearch.data.query_plans import hops_of
from zerosearch.reward import answer_metrics, extract_answer
from zerosearch.agent.rollout import RolloutConfig, rollout

METHODS = ("direct", "cot", "r1", "rag", "search-agent")
_TEMPLATES = {"direct": DIRECT, "cot": COT, "r1": R1}
NEEDS_ENGINE = ("rag", "search-agent")


@dataclass
class EvalConfig:
    methods: list[str] = field(default_factory=lambda: ["direct", "cot", "rag", "search-agent"])
    k: int = 3  # documents per search (rag and search-agent)
    max_turns: int = 4  # search-agent action turns before the forced answer
    max_new_tokens: int = 512  # per turn (search-agent) or per answer (cot, r1)
    answer_tokens: int = 64  # direct and rag: a short answer
    max_obs_tokens: int = 1024
    max_prompt_tokens: int = 2048
    max_total_tokens: int = 4096
    temperature: float = 0.0  # greedy, as in the paper's evaluation
    seed: int = 0
    chunk: int = 32  # examples generated together, then appended to predictions.jsonl

    def __post_init__(self) -> None:
        bad = [m for m in self.methods if m not in METHODS]
        if bad or not self.methods:
            raise ValueError(f"unknown method(s) {', '.join(bad) or '(none given)'}; choose from {', '.join(METHODS)}")
        if self.k < 1 or self.chunk < 1 or self.max_new_tokens < 1 or self.answer_tokens < 1:
            raise ValueError("k, chunk, max_new_tokens and answer_tokens must be >= 1")


class AnswerBlind(SearchEngine):
    """Forwards only (query, k, row_id): whatever the caller attached, the engine cannot see the question,
    the gold answers or a noise setting."""

    def __init__(self, engine: SearchEngine):
        if engine.sees_gold_answers:
            raise ValueError(f"engine {engine.identity()!r} reads gold answers (a simulator not in answer-blind "
                             "mode); evaluation refuses it: use a real engine or --answer-blind")
        self.engine, self.name = engine, engine.name

    def search(self, requests: list[SearchRequest]) -> list[list[Document]]:
        return self.engine.search([SearchRequest(query=r.query, k=r.k, row_id=r.row_id) for r in requests])

    def identity(self) -> str:
        return self.engine.identity()

    def stats(self) -> dict[str, Any]:
        return self.engine.stats()


# --- generation for the single-turn methods --------------------------------------------------------------

def _generate(backend: Any, tokenizer: Any, texts: list[str], max_new_tokens: int, temperature: float,
              seed: int) -> list[Any]:
    chat = getattr(tokenizer, "chat_template", None) is not None
    ids = [tokenizer(render_prompt(t, tokenizer), add_special_tokens=not chat).input_ids for t in texts]
    return backend.generate(ids, max_new_tokens, ("</answer>",), temperature, 1.0, seed)


def _rag_texts(questions: list[str], documents: list[list[Document]]) -> list[str]:
    return [RAG.format(question=q, documents=format_documents(d)) for q, d in zip(questions, documents)]


_THINK = re.compile(r"<think>.*?(</think>|$)", re.DOTALL)


def untagged_answer(text: str) -> str | None:
    """A baseline's answer when it wrote no <answer> tags (small models often do not): its first line
    outside <think>, as FlashRAG scores raw generations. Rows record whether the answer was tagged."""
    lines = [ln.strip() for ln in _THINK.sub("", text).replace("<answer>", "").split("\n") if ln.strip()]
    return lines[0] if lines else None


def answer_from_documents(backend: Any, tokenizer: Any, questions: list[str], documents: list[list[Document]], *,
                          max_new_tokens: int = 32, temperature: float = 0.0, seed: int = 0) -> list[str | None]:
    """A reader: the `rag` method's prompt over the given documents, its answer (tagged, else its first
    line). `zerosearch judge-simulator` reads simulated and real documents with it."""
    outs = _generate(backend, tokenizer, _rag_texts(questions, documents), max_new_tokens, temperature, seed)
    return [_answer(o, tokenizer)[0] for o in outs]


def _answer(out: Any, tokenizer: Any) -> tuple[str | None, bool]:
    tagged = extract_answer(out.text)
    if tagged is not None:
        return tagged, True
    return untagged_answer(tokenizer.decode(out.token_ids, skip_special_tokens=True)), False


def _single_turn(method: str, records: list[QARecord], backend: Any, tokenizer: Any, engine: SearchEngine | None,
                 cfg: EvalConfig) -> list[dict[str, Any]]:
    docs: list[list[Document]] = [[] for _ in records]
    if method == "rag":
        docs = engine.search([SearchRequest(query=r.question, k=cfg.k, row_id=r.id) for r in records])  # type: ignore[union-attr]
        texts = _rag_texts([r.question for r in records], docs)
    else:
        texts = [_TEMPLATES[method].format(question=r.question) for r in records]
    budget = cfg.answer_tokens if method in ("direct", "rag") else cfg.max_new_tokens
    rows = []
    for r, out, d in zip(records, _generate(backend, tokenizer, texts, budget, cfg.temperature, cfg.seed), docs):
        answer, tagged = _answer(out, tokenizer)
        extra = {"documents": [x.to_dict() for x in d], "queries": [r.question]} if method == "rag" else {}
        rows.append(_row(method, r, answer, out.text, turns=1, searches=int(method == "rag"), invalid=0,
                         tagged=tagged, **extra))
    return rows


def _search_agent(records: list[QARecord], backend: Any, tokenizer: Any, engine: SearchEngine,
                  cfg: EvalConfig) -> list[dict[str, Any]]:
    rcfg = RolloutConfig(max_turns=cfg.max_turns, max_new_tokens_per_turn=cfg.max_new_tokens, k=cfg.k,
                         max_obs_tokens=cfg.max_obs_tokens, max_prompt_tokens=cfg.max_prompt_tokens,
                         max_total_tokens=cfg.max_total_tokens, temperature=cfg.temperature, n=1,
                         prompt_overflow="truncate_left")
    trajs = rollout(records, backend, tokenizer, engine, rcfg, seed=cfg.seed)
    return [_row("search-agent", r, t.answer, t.response, turns=t.turns, searches=t.searches,
                 invalid=t.invalid_actions, tagged=t.answer is not None, queries=t.queries, end=t.end,
                 truncation=t.truncation)
            for r, t in zip(records, trajs)]


def _row(method: str, r: QARecord, answer: str | None, response: str, *, turns: int, searches: int, invalid: int,
         tagged: bool, **extra: Any) -> dict[str, Any]:
    return {"method": method, "dataset": r.data_source, "id": r.id, "question": r.question, "hops": hops_of(r),
            "golden_answers": r.golden_answers, "prediction": answer, **answer_metrics(answer, r.golden_answers),
            "turns": turns, "searches": searches, "invalid_actions": invalid, "tagged": tagged,
            "answer_words": len(answer.split()) if answer else 0, "response": response, **extra}


# --- the run ---------------------------------------------------------------------------------------------

def _key(method: str, dataset: str, id_: str) -> str:
    return f"{method}\t{dataset}\t{id_}"


def run_eval(records: Sequence[QARecord], backend: Any, tokenizer: Any, engine: SearchEngine | None, cfg: EvalConfig,
             out: str | Path, *, meta: dict[str, Any] | None = None,
             progress: Callable[[int, int, str], None] | None = None) -> dict[str, Any]:
    """Evaluate every method on every record into `out/`; resume what is there. Returns the summary."""
    out = Path(out)
    counts = Counter((r.data_source, r.id) for r in records)
    dup = next((key for key, n in counts.items() if n > 1), None)
    if dup is not None:
        raise ValueError(f"duplicate question id {dup[1]!r} in dataset {dup[0]!r}: ids must be unique per dataset")
    if any(m in NEEDS_ENGINE for m in cfg.methods):
        if engine is None:
            raise ValueError(f"methods {', '.join(m for m in cfg.methods if m in NEEDS_ENGINE)} need an engine")
        engine = engine if isinstance(engine, AnswerBlind) else AnswerBlind(engine)
    by_ds: dict[str, list[QARecord]] = {}
    for r in records:
        by_ds.setdefault(r.data_source, []).append(r)
    header = {**(meta or {}), "engine": engine.identity() if engine is not None else None,
              "config": dataclasses.asdict(cfg),
              "data": {ds: {"n": len(rs), "hash": data_hash(rs)} for ds, rs in sorted(by_ds.items())},
              "protocol": eval_protocol(engine, cfg, list(records), tokenizer, (meta or {}).get("data_spec"))}
    out.mkdir(parents=True, exist_ok=True)
    with _exclusive(out):
        return _run_locked(records, backend, tokenizer, engine, cfg, out, header, by_ds, progress)


@contextlib.contextmanager
def _exclusive(out: Path) -> Iterator[None]:
    """One evaluation at a time per --out: two appending to the same predictions would count twice."""
    with open(out / ".lock", "a") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ValueError(f"another evaluation is writing to {out} right now; wait for it to finish or choose "
                             "another --out") from None
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _read_predictions(path: Path) -> dict[str, dict[str, Any]]:
    """predictions.jsonl keyed by (method, dataset, id); a key written twice is refused with both lines, so a
    question is never counted twice."""
    rows = truncate_jsonl(path)  # drops the line an interrupted append cut short
    if not rows:
        return {}
    # The line number of each row (blank lines hold none).
    lines = [i for i, line in enumerate(path.read_text(encoding="utf-8").split("\n"), start=1) if line.strip()]
    out: dict[str, dict[str, Any]] = {}
    first: dict[str, int] = {}
    for lineno, row in zip(lines, rows):
        try:
            key = _key(row["method"], row["dataset"], row["id"])
        except KeyError as e:
            raise ValueError(f"{path}:{lineno}: prediction without field {e.args[0]!r}") from None
        if key in out:
            raise ValueError(f"{path}:{lineno}: duplicate prediction for method {row['method']!r}, dataset "
                             f"{row['dataset']!r}, id {row['id']!r} (first at line {first[key]}); remove one of the "
                             "two lines (or the folder) and rerun")
        out[key], first[key] = row, lineno
    return out


def _run_locked(records: Sequence[QARecord], backend: Any, tokenizer: Any, engine: SearchEngine | None,
                cfg: EvalConfig, out: Path, header: dict[str, Any], by_ds: dict[str, list[QARecord]],
                progress: Callable[[int, int, str], None] | None) -> dict[str, Any]:
    _check_or_write_header(out / "eval.json", header)

    pred_path = out / "predictions.jsonl"
    done = set(_read_predictions(pred_path))
    total = len(records) * len(cfg.methods)
    finished = sum(_key(m, r.data_source, r.id) in done for m in cfg.methods for r in records)
    t0 = time.perf_counter()
    if progress:
        progress(finished, total, cfg.methods[0])
    for method in cfg.methods:
        todo = [r for r in records if _key(method, r.data_source, r.id) not in done]
        for b in range(0, len(todo), cfg.chunk):
            chunk = todo[b: b + cfg.chunk]
            rows = (_search_agent(chunk, backend, tokenizer, engine, cfg) if method == "search-agent"  # type: ignore[arg-type]
                    else _single_turn(method, chunk, backend, tokenizer, engine, cfg))
            for row in rows:
                append_jsonl(pred_path, row)
            finished += len(chunk)
            if progress:
                progress(finished, total, method)
    # One row per (method, dataset, id) of this evaluation: n is the number of distinct questions.
    wanted = {_key(m, r.data_source, r.id) for m in cfg.methods for r in records}
    rows = [row for key, row in _read_predictions(pred_path).items() if key in wanted]
    summary = summarize(rows, cfg.methods, sorted(by_ds))
    hops = by_hops(rows, cfg.methods)
    result = {**header, "seconds_this_run": round(time.perf_counter() - t0, 1), "summary": summary, "by_hops": hops}
    atomic_write_text(out / "results.json", json.dumps(result, indent=2, ensure_ascii=False) + "\n")
    atomic_write_text(out / "results.md", markdown_table(summary) + "\n\n## By hops\n\n" + hops_markdown(hops) + "\n\n"
                      + protocol_markdown(header["protocol"]) + "\n")
    atomic_write_text(out / "results.csv", csv_table(summary))
    write_leaderboard(out, result)  # leaderboard-<method>.json: ReSeek's SearchAgent-leaderboard layout
    return result


def _check_or_write_header(path: Path, header: dict[str, Any]) -> None:
    """First run: write it. Resumed run: it must describe the same evaluation, or results would mix."""
    if path.exists():
        old = json.loads(path.read_text(encoding="utf-8"))
        diff = sorted(k for k in set(old) | set(header) if old.get(k) != header.get(k))
        if diff:
            raise ValueError(f"{path.parent} holds an evaluation with a different {', '.join(diff)}; choose "
                             "another --out (nothing is overwritten)")
        return
    atomic_write_text(path, json.dumps(header, indent=2, ensure_ascii=False) + "\n")


# --- tables ----------------------------------------------------------------------------------------------

METRICS = ("em", "cover_em", "f1", "tagged", "turns", "searches", "invalid_rate", "answer_words")


def summarize(rows: list[dict[str, Any]], methods: Sequence[str], datasets: Sequence[str]) -> dict[str, Any]:
    """{method: {dataset: {n, em, cover_em, f1, turns, searches, invalid_rate, answer_words}, "avg": ...}}.
    "avg" is the macro average over datasets (each dataset weighs the same, as in the paper's table)."""
    out: dict[str, Any] = {}
    for m in methods:
        per: dict[str, Any] = {}
        for ds in datasets:
            rs = [r for r in rows if r["method"] == m and r["dataset"] == ds]
            if not rs:
                continue
            n = len(rs)
            actions = sum(r["invalid_actions"] + r["searches"] for r in rs) + sum(r["prediction"] is not None for r in rs)
            per[ds] = {"n": n, "em": _mean(r["em"] for r in rs), "cover_em": _mean(r["cover_em"] for r in rs),
                       "f1": _mean(r["f1"] for r in rs), "tagged": _mean(r["tagged"] for r in rs),
                       "turns": _mean(r["turns"] for r in rs),
                       "searches": _mean(r["searches"] for r in rs),
                       "invalid_rate": sum(r["invalid_actions"] for r in rs) / max(actions, 1),
                       "answer_words": _mean(r["answer_words"] for r in rs)}
        if per:
            per["avg"] = {"n": sum(v["n"] for v in per.values()),
                          **{k: _mean(v[k] for v in per.values()) for k in METRICS}}
        out[m] = per
    return out


def _mean(xs: Any) -> float:
    xs = list(xs)
    return sum(xs) / len(xs) if xs else 0.0


def _columns(*summaries: dict[str, Any]) -> list[str]:
    cols = sorted({ds for summary in summaries for per in summary.values() for ds in per if ds != "avg"})
    return cols + ["avg"]


def markdown_table(summary: dict[str, Any], metric: str = "em") -> str:
    """The paper's layout (EM x 100 by default), then the agent's behaviour averaged over datasets."""
    cols = _columns(summary)
    lines = [f"| method | {' | '.join(cols)} |", "|---" * (len(cols) + 1) + "|"]
    for m, per in summary.items():
        cells = [f"{100 * per[c][metric]:.1f}" if c in per else "-" for c in cols]
        lines.append(f"| {m} | {' | '.join(cells)} |")
    lines += ["", f"{metric.upper()} x 100 per dataset; avg = macro average. n per dataset: "
              + ", ".join(f"{c} {next((p[c]['n'] for p in summary.values() if c in p), 0)}" for c in cols[:-1]), "",
              "| method | cover-EM | F1 | tagged answers | turns | searches | invalid actions | answer words |",
              "|---" * 8 + "|"]
    for m, per in summary.items():
        a = per.get("avg")
        if a:
            lines.append(f"| {m} | {100 * a['cover_em']:.1f} | {100 * a['f1']:.1f} | {100 * a['tagged']:.0f}% | {a['turns']:.2f} | "
                         f"{a['searches']:.2f} | {100 * a['invalid_rate']:.1f}% | {a['answer_words']:.1f} |")
    return "\n".join(lines)


def csv_table(summary: dict[str, Any]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["method", "dataset", "n", *METRICS])
    for m, per in summary.items():
        for ds, v in per.items():
            w.writerow([m, ds, v["n"], *(f"{v[k]:.4f}" for k in METRICS)])
    return buf.getvalue()


def compare_table(results: list[tuple[str, dict[str, Any]]], metric: str = "em") -> str:
    """One table from several result files: a row per (run, method), EM per dataset, and for every run after
    the first the difference to the first run's same method (in points)."""
    cols = _columns(*(r["summary"] for _, r in results))
    lines = [f"| run | method | {' | '.join(cols)} |", "|---" * (len(cols) + 2) + "|"]
    base_name, base = results[0]
    for name, r in results:
        for m, per in r["summary"].items():
            ref = base["summary"].get(m, {})
            cells = []
            for c in cols:
                if c not in per:
                    cells.append("-")
                    continue
                v = 100 * per[c][metric]
                delta = f" ({v - 100 * ref[c][metric]:+.1f})" if name != base_name and c in ref else ""
                cells.append(f"{v:.1f}{delta}")
            lines.append(f"| {name} | {m} | {' | '.join(cells)} |")
    lines += ["", f"{metric.upper()} x 100; in brackets: difference to {base_name} (same method, same dataset)."]
    return "\n".join(lines)
