"""Training runs, evaluation outputs and demo runs, read into one trajectory schema for the viewer page.

Inputs (`load_run`):
    training run   a folder with samples.jsonl (and metrics.jsonl, config.yaml), or samples.jsonl itself:
                   rows as `zerosearch.training.trainer._sample` writes them, plus the step (`MetricsLogger.samples`)
    evaluation     a folder with predictions.jsonl (and eval.json), or predictions.jsonl itself: rows as
                   `zerosearch.evaluation.eval._row` writes them
    demo run       run-NNN/ with eval-before/, eval-cold-start/, eval-after/ and train/ (the latest run-NNN
                   when given the demo's --out folder)

One trajectory (compact keys: the page embeds thousands of them):
    src, key       its source (train, eval-after, ...); what --compare pairs on (method|dataset|id, or the
                   question for training samples, which record no id)
    step, method, dataset, id, hops, end, searches, turns
    q, gold, ans, em, f1   question, gold answers, the extracted answer, EM and F1 (training rows record
                   only the answer: EM/F1 are `zerosearch.reward.answer_metrics`, the rollout's own metrics)
    rw, adv, gadv  reward; advantage and the group's advantages, where samples.jsonl records them
    noise          the curriculum's noise probability at that step (metrics.jsonl's noise_prob)
    eng            engines that answered its searches
    queries, draws, docs   per search: query, useful/noisy draw, documents {t, x, s, m, f}
    mask | resp    the loss mask as recorded (`loss_mask` runs, see zerosearch.training.mask_runs; an information
                   block that is exactly search j's documents is written as j, see compact_mask), else the
                   response text; the page never derives a mask from the text
    flags          guard flags (from the documents' meta) and failure kinds; see FLAGS
Every bad row raises ValueError naming the file and line.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from zerosearch.engines.base import Document, format_documents
from zerosearch.io import read_jsonl
from zerosearch.prompts import FORCE_ANSWER, INFORMATION, INVALID_ACTION
from zerosearch.reward import answer_metrics, is_valid_format, normalize_answer

# flag -> (category, what it means). Guard flags come from what the engine/trainer recorded; failure kinds
# from the row's own fields.
FLAGS: dict[str, tuple[str, str]] = {
    "leak flagged": ("guard", "the leak guard marked a document as stating the answer the query did not bring"),
    "leak replaced": ("guard", "the leak guard served the answer-blind referee's documents instead"),
    "engine fallback": ("guard", "the engine gave up on a search ('No results found.' document)"),
    "malformed document": ("guard", "the simulator's output needed parse repairs"),
    "document cut": ("guard", "the simulator's output hit its length limit"),
    "query truncated": ("guard", "the query was cut to fit the simulator's prompt"),
    "format penalty": ("guard", "malformed tags while the reward's format term was on (format_weight > 0)"),
    "malformed format": ("guard", "malformed tags (format_weight is 0 or unknown: no penalty)"),
    "no answer": ("failure", "no <answer> (or no extractable answer)"),
    "no search": ("failure", "the agent never searched"),
    "wrong after right documents": ("failure", "wrong answer although a returned document stated a gold answer"),
    "wrong, documents lacked answer": ("failure", "wrong answer; no returned document stated a gold answer"),
    "invalid action": ("failure", "a turn with neither a search nor an answer (the corrective message)"),
    "forced answer": ("failure", "ran out of turns: the forced-answer message was inserted"),
    "context full": ("failure", "the token budget ended the trajectory"),
}
SEARCHING_METHODS = ("search-agent", "rag", None)  # None: training samples
_INFO = re.compile(r"<information>(.*?)</information>", re.S)
_HEAD, _TAIL = INFORMATION.split("{documents}")
_INFO_BLOCK = re.compile(re.escape(_HEAD) + ".*?" + re.escape(_TAIL), re.S)


@dataclass
class Run:
    label: str
    path: Path
    kind: str  # "train", "eval" or "demo"
    trajectories: list[dict[str, Any]] = field(default_factory=list)
    metrics: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def numbered_rows(path: Path) -> list[tuple[int, dict[str, Any]]]:
    """read_jsonl's rows with their line numbers (blank lines hold none); bad lines raise there."""
    rows = read_jsonl(path)
    with open(path, encoding="utf-8") as f:
        lines = [i for i, line in enumerate(f, start=1) if line.strip()]
    return list(zip(lines, rows))


def _need(path: Path, line: int, row: dict[str, Any], name: str, types: tuple[type, ...], what: str) -> Any:
    if name not in row:
        raise ValueError(f"{path}:{line}: row without field {name!r} (expected {what})")
    value = row[name]
    if not isinstance(value, types):
        raise ValueError(f"{path}:{line}: field {name!r} should be {what}, got {type(value).__name__}")
    return value


def _golds(path: Path, line: int, row: dict[str, Any]) -> list[str]:
    golds = _need(path, line, row, "golden_answers", (list,), "a list of strings")
    if not all(isinstance(g, str) for g in golds):
        raise ValueError(f"{path}:{line}: field 'golden_answers' should hold strings only")
    return golds


def _docs(path: Path, line: int, row: dict[str, Any]) -> list[list[dict[str, Any]]]:
    """Per search, the documents as {t: title, x: text, s: source, m: useful/noisy, f: flags}."""
    raw = row.get("documents") or []
    if raw and isinstance(raw[0], dict):  # rag rows: one flat list for the one search
        raw = [raw]
    out = []
    for docs in raw:
        if not isinstance(docs, list) or not all(isinstance(d, dict) for d in docs):
            raise ValueError(f"{path}:{line}: field 'documents' should be a list of document lists")
        out.append([_doc(d) for d in docs])
    return out


# A document's `meta` key -> the flag the page shows when it is set (the engine and leak guard write them).
_DOC_FLAGS = (("leak", "leak flagged"), ("leak_replaced", "leak replaced"), ("fallback", "engine fallback"),
              ("repairs", "malformed document"), ("truncated", "document cut"), ("query_truncated", "query truncated"))


def _doc(d: dict[str, Any]) -> dict[str, Any]:
    meta = d.get("meta") or {}
    flags = [label for key, label in _DOC_FLAGS if meta.get(key)]
    out = {"t": str(d.get("title") or ""), "x": str(d.get("text") or ""), "s": str(d.get("source") or ""),
           "m": meta.get("mode"), "f": flags}
    if meta.get("leak_reason"):
        out["why"] = str(meta["leak_reason"])
    return out


def _states_gold(text: str, golds: list[str]) -> bool:
    hay = f" {normalize_answer(text)} "
    return any(g and f" {g} " in hay for g in (normalize_answer(x) for x in golds))


def failure_kinds(t: dict[str, Any], response: str, invalid: int, docs_text: list[str]) -> list[str]:
    """The failure kinds of one trajectory (see FLAGS); [] for a correct answer with nothing odd."""
    out = []
    if t["ans"] is None:
        out.append("no answer")
    searching = t["method"] in SEARCHING_METHODS
    if searching and not t["searches"]:
        out.append("no search")
    if t["em"] < 1 and t["ans"] is not None and searching and t["searches"]:
        right_docs = any(_states_gold(x, t["gold"]) for x in docs_text)
        out.append("wrong after right documents" if right_docs else "wrong, documents lacked answer")
    if invalid:
        out.append("invalid action")
    if FORCE_ANSWER in response:
        out.append("forced answer")
    if t.get("end") == "context":
        out.append("context full")
    return out


def _number(x: Any) -> float | None:
    """A finite number, else None (a NaN reward must not break the page's JSON)."""
    return float(x) if isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) else None


def _common(t: dict[str, Any], response: str, mask: Any, docs: list[list[dict[str, Any]]]) -> dict[str, Any]:
    for k in ("rw", "adv", "noise", "em", "f1"):
        t[k] = _number(t[k])
    t["em"], t["f1"] = t["em"] or 0.0, t["f1"] or 0.0
    t["docs"] = docs
    if mask is not None:
        t["mask"] = compact_mask(mask, docs)
    else:
        t["resp"] = response
    flags = sorted({f for search in docs for d in search for f in d["f"]}, key=list(FLAGS).index)
    t["flags"] = flags
    return t


def compact_mask(runs: list[list], docs: list[list[dict[str, Any]]]) -> list[list]:
    """The mask runs with every information block that is exactly what the rollout inserted for search j
    (INFORMATION around format_documents of its documents) written as j: the page rebuilds the text from the
    documents, so a trajectory does not carry its documents twice. The n-th block of the masked runs belongs
    to the n-th search; a block that differs (cut to max_obs_tokens) stays text."""
    out: list[list] = []
    n = 0
    for text, m in runs:
        if m:
            out.append([text, m])
            continue
        pieces: list[Any] = []
        pos = 0
        for match in _INFO_BLOCK.finditer(text):
            if n < len(docs) and match.group(0) == information_block(docs[n]):
                pieces += [text[pos:match.start()], n] if match.start() > pos else [n]
                pos = match.end()
            n += 1
        if not any(isinstance(p, int) for p in pieces):
            out.append([text, m])
            continue
        out.append([pieces + ([text[pos:]] if pos < len(text) else []), m])
    return out


def information_block(docs: list[dict[str, Any]]) -> str:
    return INFORMATION.format(documents=format_documents([Document(title=d["t"], text=d["x"], source=d["s"])
                                                           for d in docs]))


def _mask(path: Path, line: int, row: dict[str, Any], response: str) -> list[list] | None:
    runs = row.get("loss_mask")
    if runs is None:
        return None
    if not isinstance(runs, list) or not all(isinstance(r, list) and len(r) == 2 and isinstance(r[0], str)
                                             and r[1] in (0, 1) for r in runs):
        raise ValueError(f"{path}:{line}: field 'loss_mask' should be [[text, 0 or 1], ...]")
    if "".join(r[0] for r in runs) != response:
        raise ValueError(f"{path}:{line}: the loss_mask runs do not spell the row's response")
    return runs


def _read_config(folder: Path) -> dict[str, Any]:
    path = folder / "config.yaml"
    if not path.is_file():
        return {}
    import yaml

    try:
        cfg = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise ValueError(f"{path}: invalid YAML ({e})") from None
    return cfg if isinstance(cfg, dict) else {}


def load_samples(path: Path, src: str = "train") -> Run:
    """A training run's samples.jsonl, with its folder's metrics.jsonl and config.yaml where present."""
    folder = path.parent
    metrics_path = folder / "metrics.jsonl"
    metrics = [r for _, r in numbered_rows(metrics_path)] if metrics_path.is_file() else []
    noise = {r["step"]: r["noise_prob"] for r in metrics if isinstance(r.get("noise_prob"), (int, float))}
    cfg = _read_config(folder)
    engine = str((cfg.get("engine") or {}).get("name") or "") or None
    format_weight = (cfg.get("rollout") or {}).get("format_weight")
    run = Run(label=folder.name or str(folder), path=path, kind="train", metrics=metrics)
    for line, row in numbered_rows(path):
        step = _need(path, line, row, "step", (int,), "an integer")
        question = _need(path, line, row, "question", (str,), "a string")
        response = _need(path, line, row, "response", (str,), "a string")
        golds = _golds(path, line, row)
        answer = row.get("answer")
        docs = _docs(path, line, row)
        m = answer_metrics(answer, golds)
        t = {"src": src, "key": question, "step": step, "method": None, "q": question, "gold": golds,
             "ans": answer, "em": m["em"], "f1": m["f1"], "rw": row.get("reward"), "adv": row.get("advantage"),
             "noise": noise.get(step), "queries": list(row.get("queries") or []),
             "draws": list(row.get("draws") or []), "end": row.get("end"),
             "searches": int(row.get("searches") or 0), "turns": row.get("turns")}
        if "group" in row:
            t["grp"] = f"{src}|{step}|{row['group']}"
        engines = sorted({d["s"] for search in docs for d in search if d["s"]})
        t["eng"] = engines or ([engine] if engine and t["searches"] else [])
        _common(t, response, _mask(path, line, row, response), docs)
        kinds = failure_kinds(t, response, response.count(INVALID_ACTION),
                              [f"{d['t']} {d['x']}" for search in docs for d in search])
        if not is_valid_format(response):
            kinds.insert(0, "format penalty" if isinstance(format_weight, (int, float)) and format_weight > 0
                         else "malformed format")
        t["flags"] += kinds
        run.trajectories.append(t)
    if not any("mask" in t for t in run.trajectories):
        run.notes.append("samples.jsonl records no loss mask (`loss_mask`): the token view shows the response "
                         "unshaded")
    _group_advantages(run.trajectories)
    return run


def _group_advantages(trajs: list[dict[str, Any]]) -> None:
    groups: dict[str, list[dict[str, Any]]] = {}
    for t in trajs:
        if t.get("grp") is not None and isinstance(t.get("adv"), (int, float)):
            groups.setdefault(t["grp"], []).append(t)
    for members in groups.values():
        for t in members:
            t["gadv"] = [m["adv"] for m in members]


def _eval_engine(folder: Path) -> str | None:
    import json

    path = folder / "eval.json"
    if not path.is_file():
        return None
    try:
        header = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}:{e.lineno}: invalid JSON ({e.msg})") from None
    eng = (header.get("protocol") or {}).get("engine") if isinstance(header, dict) else None
    if isinstance(eng, dict) and eng.get("name"):
        return str(eng["name"])
    ident = header.get("engine") if isinstance(header, dict) else None
    return str(ident).split(":")[0] if ident else None


def load_predictions(path: Path, src: str | None = None) -> Run:
    """An evaluation's predictions.jsonl, with the engine named in its folder's eval.json."""
    folder = path.parent
    src = src or folder.name or "eval"
    engine = _eval_engine(folder)
    run = Run(label=folder.name or str(folder), path=path, kind="eval")
    for line, row in numbered_rows(path):
        method = _need(path, line, row, "method", (str,), "a string")
        dataset = _need(path, line, row, "dataset", (str,), "a string")
        id_ = _need(path, line, row, "id", (str, int), "a string")
        question = _need(path, line, row, "question", (str,), "a string")
        golds = _golds(path, line, row)
        if "prediction" not in row:
            raise ValueError(f"{path}:{line}: row without field 'prediction' (expected a string or null)")
        answer = row["prediction"]
        response = _need(path, line, row, "response", (str,), "a string")
        docs = _docs(path, line, row)
        m = answer_metrics(answer, golds)
        t = {"src": src, "key": f"{method}|{dataset}|{id_}", "step": None, "method": method, "dataset": dataset,
             "id": str(id_), "hops": row.get("hops"), "q": question, "gold": golds, "ans": answer,
             "em": row.get("em", m["em"]), "f1": row.get("f1", m["f1"]), "rw": None, "adv": None,
             "noise": None, "queries": list(row.get("queries") or []), "draws": [], "end": row.get("end"),
             "searches": int(row.get("searches") or 0), "turns": row.get("turns")}
        engines = sorted({d["s"] for search in docs for d in search if d["s"]})
        t["eng"] = engines or ([engine] if engine and t["searches"] else [])
        _common(t, response, None, docs)
        docs_text = [f"{d['t']} {d['x']}" for search in docs for d in search] + _INFO.findall(response)
        t["flags"] += failure_kinds(t, response, int(row.get("invalid_actions") or 0), docs_text)
        run.trajectories.append(t)
    return run


DEMO_PARTS = ("eval-before", "eval-cold-start", "train", "eval-after")


def _demo_parts(folder: Path) -> list[tuple[str, Path]]:
    parts = []
    for name in DEMO_PARTS:
        for file in ("samples.jsonl", "predictions.jsonl"):
            if (folder / name / file).is_file():
                parts.append((name, folder / name / file))
    return parts


def load_run(spec: str | Path) -> Run:
    """Whatever the user pointed at: a file, a run/eval folder, a demo run or the demo's --out folder."""
    path = Path(spec)
    if not path.exists():
        raise ValueError(f"{path}: no such file or folder")
    if path.is_file():
        return _load_file(path)
    for name in ("samples.jsonl", "predictions.jsonl"):
        if (path / name).is_file():
            return _load_file(path / name)
    runs = sorted(p for p in path.glob("run-[0-9][0-9][0-9]") if p.is_dir() and _demo_parts(p))
    demo = path if _demo_parts(path) else (runs[-1] if runs else None)
    if demo is None:
        why = " (metrics.jsonl but no samples.jsonl: train with train.samples_per_step > 0)" \
            if (path / "metrics.jsonl").is_file() else ""
        raise ValueError(f"{path}: no samples.jsonl (training run), predictions.jsonl (evaluation) or demo run "
                         f"({', '.join(p + '/' for p in DEMO_PARTS)}) found{why}")
    run = Run(label=demo.name, path=demo, kind="demo")
    if demo is not path:
        run.notes.append(f"the latest demo run in {path}: {demo.name}")
    for name, file in _demo_parts(demo):
        part = load_samples(file, name) if file.name == "samples.jsonl" else load_predictions(file, name)
        run.trajectories += part.trajectories
        run.metrics = run.metrics or part.metrics
        run.notes += [f"{name}: {n}" for n in part.notes]
    return run


def _load_file(path: Path) -> Run:
    if path.name == "samples.jsonl":
        return load_samples(path)
    if path.name == "predictions.jsonl":
        return load_predictions(path)
    if path.suffix != ".jsonl":
        raise ValueError(f"{path}: not a JSONL file (expected samples.jsonl, predictions.jsonl or a run folder)")
    rows = numbered_rows(path)
    if not rows:
        raise ValueError(f"{path}: no rows")
    line, first = rows[0]
    if "method" in first:
        return load_predictions(path)
    if "step" in first and "response" in first:
        return load_samples(path)
    raise ValueError(f"{path}:{line}: neither a training sample (step, response) nor a prediction (method, ...)")


def compare_pairs(a: list[dict[str, Any]], b: list[dict[str, Any]], offset: int) -> list[list[Any]]:
    """[[key, [indices in a], [indices in b + offset], rank]] for the keys both runs hold; rank 2: EM differs,
    1: only the answers differ, 0: same. Sorted rank first, then a's order."""
    def index(ts: list[dict[str, Any]], base: int) -> dict[str, list[int]]:
        out: dict[str, list[int]] = {}
        for i, t in enumerate(ts):
            out.setdefault(t["key"], []).append(base + i)
        return out

    ia, ib = index(a, 0), index(b, offset)
    every = a + b
    pairs = []
    for key, xs in ia.items():
        ys = ib.get(key)
        if not ys:
            continue
        em = [sum(every[i]["em"] for i in side) / len(side) for side in (xs, ys)]
        answers = [{normalize_answer(every[i]["ans"] or "") for i in side} for side in (xs, ys)]
        rank = 2 if em[0] != em[1] else 1 if answers[0] != answers[1] else 0
        pairs.append([key, xs, ys, rank])
    pairs.sort(key=lambda p: -p[3])  # stable: a's order within a rank
    return pairs
