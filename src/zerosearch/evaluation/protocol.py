"""The evaluation protocol: what must be equal for two EM numbers to be comparable, recorded with every result.

Published search-agent numbers move by ~10 EM points with the retriever and corpus alone, and papers differ in
k, turns, prompt and split. So every `zerosearch eval` result carries a `protocol` record:

    engine          {name, identity}   the engine's identity (its corpus fingerprint replaced by the content
                                       hash below, so two copies of one corpus compare equal)
    corpus          {path, sha256}     the local corpus the engine searches (null for remote/simulated ones)
    k, max_turns                       documents per search, search-agent action turns
    prompt_template {method: {name, sha256}}, chat_template_sha256 (null: raw text, base model)
    split           e.g. "world:test", or the QA files' names
    n_questions, questions_sha256      how many, and a hash of the questions and gold answers themselves
    sampling        {temperature, top_p, seed}
    lengths         the token budgets (per turn, per answer, per observation, in total)

`compare_protocols` lists the fields that differ; `zerosearch compare` refuses to put such results side by
side unless told to. `leaderboard` writes a result in the SearchAgent-leaderboard layout of ReSeek's public
leaderboard, `{"config": {...}, "results": {"<dataset>": {"exact_match": ...}}}`, with the protocol in
`config`; `read_result` reads either layout back.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from zerosearch import prompts

# The text each method's prompts are made of (the search agent's includes what the rollout inserts).
TEMPLATES: dict[str, tuple[str, tuple[str, ...]]] = {
    "direct": ("DIRECT", (prompts.DIRECT,)),
    "cot": ("COT", (prompts.COT,)),
    "r1": ("R1", (prompts.R1,)),
    "rag": ("RAG", (prompts.RAG,)),
    "search-agent": ("SEARCH_AGENT", (prompts.SEARCH_AGENT, prompts.INFORMATION, prompts.INVALID_ACTION,
                                      prompts.FORCE_ANSWER)),
}


def _sha(*texts: str) -> str:
    h = hashlib.sha256()
    for t in texts:
        h.update(t.encode())
        h.update(b"\0")
    return h.hexdigest()


def file_sha256(path: str | Path) -> str:
    """The content hash of a file, cached by its fingerprint (size, mtime, ends) so a wiki-scale corpus is
    hashed once, not at every evaluation."""
    from zerosearch.engines.corpus import fingerprint
    from zerosearch.io import atomic_write_text, cache_dir

    path = Path(path)
    memo = cache_dir("corpus-sha256") / f"{fingerprint(path)}.txt"
    if memo.is_file():
        return memo.read_text(encoding="utf-8").strip()
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    atomic_write_text(memo, h.hexdigest() + "\n")
    return h.hexdigest()


def _innermost(engine: Any) -> Any:
    """Through the wrappers (eval's AnswerBlind `.engine`, the cache's `.inner`) to the engine itself."""
    while True:
        nxt = getattr(engine, "engine", None) or getattr(engine, "inner", None)
        if nxt is None:
            return engine
        engine = nxt


def engine_record(engine: Any) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """({name, identity}, {path, sha256} or None) of an engine (None, None without one)."""
    if engine is None:
        return None, None
    inner = _innermost(engine)
    identity = engine.identity()
    corpus = getattr(getattr(inner, "corpus", None), "path", None)
    if corpus is None:
        return {"name": inner.name, "identity": identity}, None
    sha = file_sha256(corpus)
    fp = getattr(inner, "fingerprint", None)
    if fp:
        identity = identity.replace(fp, f"sha256={sha[:16]}")
    return {"name": inner.name, "identity": identity}, {"path": str(Path(corpus).resolve()), "sha256": sha}


def split_of(data_spec: str | None) -> str | None:
    """"world" -> "world:test" (eval's default split); QA files -> their names, comma-separated."""
    if not data_spec:
        return None
    parts = []
    for part in (s for s in data_spec.split(",") if s):
        if part == "world" or part.startswith("world:"):
            parts.append(f"world:{part.partition(':')[2] or 'test'}")
        else:
            parts.append(Path(part).name)
    return ",".join(parts)


def eval_protocol(engine: Any, cfg: Any, records: list[Any], tokenizer: Any, data_spec: str | None) -> dict[str, Any]:
    """The protocol record of one evaluation (cfg: zerosearch.evaluation.eval.EvalConfig)."""
    from zerosearch.data.qa import data_hash

    eng, corpus = engine_record(engine)
    chat = getattr(tokenizer, "chat_template", None)
    return {
        "engine": eng,
        "corpus": corpus,
        "k": cfg.k,
        "max_turns": cfg.max_turns,
        "prompt_template": {m: {"name": TEMPLATES[m][0], "sha256": _sha(*TEMPLATES[m][1])} for m in cfg.methods},
        "chat_template_sha256": _sha(chat) if isinstance(chat, str) else None,
        "split": split_of(data_spec),
        "n_questions": len(records),
        "questions_sha256": data_hash(records),
        "sampling": {"temperature": cfg.temperature, "top_p": 1.0, "seed": cfg.seed},
        "lengths": {"max_new_tokens": cfg.max_new_tokens, "answer_tokens": cfg.answer_tokens,
                    "max_obs_tokens": cfg.max_obs_tokens, "max_total_tokens": cfg.max_total_tokens},
    }


# --- comparison ------------------------------------------------------------------------------------------

def _flat(d: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(d, dict):
        return {prefix: d}
    out: dict[str, Any] = {}
    for k, v in d.items():
        out.update(_flat(v, f"{prefix}.{k}" if prefix else str(k)))
    if not d and prefix:
        out[prefix] = {}
    return out


def compare_protocols(a: dict[str, Any] | None, b: dict[str, Any] | None) -> list[tuple[str, Any, Any]]:
    """(field, a's value, b's value) for every protocol field that differs, dotted (e.g. "sampling.seed").
    A missing protocol is one difference, "protocol". Templates of methods only one side ran are skipped
    (the table shows those as missing anyway), and so are the fields a side's methods do not depend on."""
    if a is None or b is None:
        return [] if a is b else [("protocol", "recorded" if a else "not recorded", "recorded" if b else "not recorded")]
    fa, fb = _flat(a), _flat(b)
    # A side that ran no engine method (direct, cot, r1 only) depends on no engine, corpus or k; one that ran
    # no search agent depends on no turn limit: those fields cannot make its numbers incomparable.
    skip = set()
    if a.get("engine") is None or b.get("engine") is None:
        skip |= {"engine", "corpus", "k"}
    if not all("search-agent" in (p.get("prompt_template") or {}) for p in (a, b)):
        skip.add("max_turns")
    diffs = []
    for key in sorted(set(fa) | set(fb)):
        if key.startswith("prompt_template.") and (key not in fa or key not in fb):
            continue
        if key.split(".")[0] in skip:
            continue
        if fa.get(key) != fb.get(key):
            diffs.append((key, fa.get(key), fb.get(key)))
    return diffs


def allowed(field: str, allow: set[str]) -> bool:
    """A field is allowed to differ when it or a parent is named ("engine" allows "engine.identity")."""
    return "*" in allow or any(field == a or field.startswith(a + ".") for a in allow)


def check_comparable(runs: list[tuple[str, dict[str, Any] | None]], allow: set[str] = frozenset()) -> list[str]:  # type: ignore[assignment]
    """Compare every run's protocol with the first's. Differences not in `allow` raise one ValueError that
    names them all; allowed ones come back as lines to print beside the table."""
    base_name, base = runs[0]
    refused, noted = [], []
    for name, proto in runs[1:]:
        for field, x, y in compare_protocols(base, proto):
            line = f"{name} vs {base_name}: {field}: {_short(y)} vs {_short(x)}"
            (noted if allowed(field, allow) else refused).append(line)
    if refused:
        raise ValueError("the results were not evaluated under the same protocol, so their numbers are not "
                         "comparable:\n  " + "\n  ".join(refused) + "\npass --allow-protocol-mismatch "
                         "[FIELD,...] to compare them anyway (the differences are then printed with the table)")
    return noted


def _short(v: Any) -> str:
    s = json.dumps(v, ensure_ascii=False) if not isinstance(v, str) else repr(v)
    return s if len(s) <= 80 else s[:77] + "..."


def protocol_markdown(protocol: dict[str, Any] | None) -> str:
    """Two lines for results.md: the protocol fields a reader checks first."""
    if not protocol:
        return "Protocol: not recorded."
    eng = (protocol.get("engine") or {}).get("identity")
    corpus = protocol.get("corpus") or {}
    s = protocol["sampling"]
    return (f"Protocol: engine `{eng}`; corpus `{corpus.get('path')}` (sha256 {str(corpus.get('sha256'))[:12]}); "
            f"k {protocol['k']}; max turns {protocol['max_turns']}; split {protocol['split']}; "
            f"{protocol['n_questions']} questions (sha {protocol['questions_sha256']}); temperature "
            f"{s['temperature']}, top-p {s['top_p']}, seed {s['seed']}; templates "
            + ", ".join(f"{m} {t['name']} {t['sha256'][:8]}" for m, t in protocol["prompt_template"].items()) + ".")


# --- the leaderboard layout --------------------------------------------------------------------------------

def leaderboard(result: dict[str, Any], method: str) -> dict[str, Any]:
    """One method of a results.json in the SearchAgent-leaderboard layout: results.<dataset>.exact_match
    (fractions, as the leaderboard shows them); F1, cover-EM and n per dataset, and the protocol, in config."""
    from zerosearch import __version__

    per = result["summary"][method]
    datasets = sorted(ds for ds in per if ds != "avg")
    return {
        "config": {"model": result.get("model"), "method": method, "framework": f"zerosearch {__version__}",
                   "protocol": result.get("protocol"),
                   "details": {ds: {"n": per[ds]["n"], "f1": per[ds]["f1"], "cover_em": per[ds]["cover_em"]}
                               for ds in datasets}},
        "results": {ds: {"exact_match": per[ds]["em"]} for ds in datasets},
    }


def write_leaderboard(out: str | Path, result: dict[str, Any]) -> list[Path]:
    """out/leaderboard-<method>.json for every method of the result (atomic writes)."""
    from zerosearch.io import atomic_write_text

    paths = []
    for method in result["summary"]:
        if not result["summary"][method]:
            continue
        path = Path(out) / f"leaderboard-{method}.json"
        atomic_write_text(path, json.dumps(leaderboard(result, method), indent=2, ensure_ascii=False) + "\n")
        paths.append(path)
    return paths


def read_result(path: str | Path) -> dict[str, Any]:
    """A results.json or a leaderboard JSON as {"summary": {method: {dataset: {...}, "avg": ...}}, "protocol",
    "model"}: the leaderboard's numbers round-trip to the summary's em / f1 / cover_em / n."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not JSON ({e.msg} at line {e.lineno})") from None
    if isinstance(data, dict) and "summary" in data:
        return data
    if not (isinstance(data, dict) and isinstance(data.get("results"), dict) and isinstance(data.get("config"), dict)):
        raise ValueError(f"{path}: neither a zerosearch results.json ('summary') nor a leaderboard JSON "
                         "('config' and 'results')")
    cfg = data["config"]
    details = cfg.get("details") or {}
    per: dict[str, Any] = {}
    for ds, v in data["results"].items():
        if not isinstance(v, dict) or "exact_match" not in v:
            raise ValueError(f"{path}: results.{ds} has no 'exact_match'")
        d = details.get(ds, {})
        per[ds] = {"em": v["exact_match"], "f1": d.get("f1"), "cover_em": d.get("cover_em"), "n": d.get("n")}
    if per:
        per["avg"] = {k: (sum(p[k] for p in per.values()) / len(per)
                          if all(p[k] is not None for p in per.values()) else None) for k in ("em", "f1", "cover_em")}
        per["avg"]["n"] = sum(p["n"] or 0 for ds, p in per.items() if ds != "avg")
    return {"model": cfg.get("model"), "protocol": cfg.get("protocol"), "summary": {cfg.get("method", "?"): per}}
