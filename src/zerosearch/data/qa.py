"""QA data: one record schema, and readers for the public files it comes in.

Every dataset becomes a list of `QARecord {id, question, golden_answers, data_source, extra}`, whatever
file it came from: the Search-R1 / ZeroSearch parquet (`prompt`, `reward_model.ground_truth.target` or a
`<|answer_split|>`-joined string), FlashRAG JSONL (`golden_answers`), IRCoT (`question_text`,
`answers_objects`), MuSiQue (`answer` + `answer_aliases`), SQuAD-like (`answers`), or our own files.

A bad row raises `DataError` naming the file, the row (line for JSONL) and the field; with
`skip_bad=True` bad rows are skipped and counted instead.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ANSWER_SPLIT = "<|answer_split|>"  # separator used by ZeroSearch's parquet for several gold answers


class DataError(ValueError):
    """A row of a data file that cannot be read; the message names file, row and field."""


@dataclass
class QARecord:
    id: str
    question: str
    golden_answers: list[str]
    data_source: str
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "question": self.question, "golden_answers": self.golden_answers,
                "data_source": self.data_source, **self.extra}


@dataclass
class ReadReport:
    """What a read did: rows read, rows skipped (with the first few reasons)."""

    path: str
    read: int = 0
    skipped: int = 0
    reasons: list[str] = field(default_factory=list)


# --- field extraction --------------------------------------------------------------------------------

_QUESTION_FIELDS = ("question", "question_text", "query", "input")
_INSTRUCTION_QUESTION = re.compile(r"Question:\s*(.*?)\s*(?:\n|$)", re.S)


def _question(row: dict[str, Any]) -> str:
    for key in _QUESTION_FIELDS:
        if isinstance(row.get(key), str) and row[key].strip():
            return row[key].strip()
    prompt = row.get("prompt")
    if isinstance(prompt, list) and prompt:
        # Search-R1 parquet: a chat list whose user turn holds the instruction and then "Question: ...".
        user = [m for m in prompt if isinstance(m, dict) and m.get("role", "user") == "user"]
        content = (user or prompt)[-1].get("content") if isinstance((user or prompt)[-1], dict) else None
        if isinstance(content, str) and content.strip():
            found = _INSTRUCTION_QUESTION.findall(content)
            return (found[-1] if found else content).strip()
    if isinstance(prompt, str) and prompt.strip():
        return prompt.strip()
    raise KeyError("question (or question_text / prompt[].content)")


def _as_answer_list(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [a for a in (s.strip() for s in value.split(ANSWER_SPLIT)) if a]
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return [str(value)]
    if isinstance(value, dict):
        for key in ("target", "text", "answer", "spans"):
            if key in value:
                return _as_answer_list(value[key])
        return []
    if isinstance(value, Iterable):  # list, tuple, numpy array
        out: list[str] = []
        for v in value:
            out.extend(_as_answer_list(v))
        return out
    return []


def _answers(row: dict[str, Any]) -> list[str]:
    answers: list[str] = []
    if "golden_answers" in row:
        answers = _as_answer_list(row["golden_answers"])
    elif isinstance(row.get("reward_model"), dict) and "ground_truth" in row["reward_model"]:
        answers = _as_answer_list(row["reward_model"]["ground_truth"])
    elif "answers_objects" in row:  # IRCoT
        answers = _as_answer_list([o.get("spans") for o in row["answers_objects"] if isinstance(o, dict)])
    else:
        for key in ("answers", "answer", "target", "targets"):
            if key in row:
                answers = _as_answer_list(row[key])
                break
        answers += _as_answer_list(row.get("answer_aliases"))  # MuSiQue
    seen: set[str] = set()
    unique = [a for a in answers if not (a in seen or seen.add(a))]
    if not unique:
        raise KeyError("golden_answers (or answer / answers / reward_model.ground_truth)")
    return unique


def _row_id(row: dict[str, Any]) -> str | None:
    for key in ("id", "question_id", "_id", "qid"):
        if row.get(key) not in (None, ""):
            return str(row[key])
    extra = row.get("extra_info")
    if isinstance(extra, dict) and extra.get("index") not in (None, ""):
        return str(extra["index"])
    return None


_KNOWN = {"question", "question_text", "query", "input", "prompt", "golden_answers", "answers", "answer",
          "answer_aliases", "answers_objects", "target", "targets", "reward_model", "id", "question_id",
          "_id", "qid", "data_source"}


def record_from_row(row: dict[str, Any], *, default_source: str, fallback_id: str) -> QARecord:
    """Map one raw row to a QARecord. Raises KeyError naming the missing field."""
    source = str(row.get("data_source") or default_source)
    rid = _row_id(row)
    # Bare per-dataset indices collide across datasets (two "0"s in a mixed file): prefix them with the
    # source so every row has a unique id (GRPO groups by it).
    rid = fallback_id if rid is None else (f"{source}-{rid}" if rid.isdigit() else rid)
    extra = {k: v for k, v in row.items() if k not in _KNOWN}
    return QARecord(id=rid, question=_question(row), golden_answers=_answers(row), data_source=source,
                    extra=_jsonable(extra))


def _jsonable(x: Any) -> Any:
    """Parquet gives numpy arrays and the like; make extras plain JSON values."""
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if hasattr(x, "tolist"):
        return _jsonable(x.tolist())
    return x


# --- file readers ------------------------------------------------------------------------------------


def _not_utf8(e: UnicodeDecodeError, column: int) -> str:
    return f"not valid UTF-8 (byte {e.object[e.start]:#04x} at byte {column} of the line); re-encode the file as UTF-8"


def json_problem(e: ValueError | RecursionError) -> str:
    """What json.loads refused, in words: its own message, or what it raises besides JSONDecodeError (a
    document nested deeper than Python's recursion limit; an integer of more than 4,300 digits)."""
    if isinstance(e, json.JSONDecodeError):
        return e.msg
    if isinstance(e, RecursionError):
        return "nested too deeply"
    return str(e).split(";")[0]


def _raw_rows(path: Path) -> Iterator[tuple[str, dict[str, Any] | Exception]]:
    """Yield (location, row or parse error) for every row of a JSONL / JSON / parquet file."""
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        with open(path, "rb") as f:  # opening it is the file system's business; reading it, the data's
            try:
                rows = pq.read_table(f).to_pylist()
            except (pa.ArrowException, OSError, ValueError) as e:  # a corrupt file: Arrow raises all three
                raise DataError(f"{path}: not a readable parquet file ({type(e).__name__}: "
                                f"{str(e).strip().splitlines()[0] if str(e).strip() else 'no detail'})") from None
        for i, row in enumerate(rows, start=1):
            yield f"row {i}", row
    elif suffix == ".json":
        raw = path.read_bytes()
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as e:  # one JSON document: no row to skip, so name where it breaks
            line, column = raw.count(b"\n", 0, e.start) + 1, e.start - raw.rfind(b"\n", 0, e.start)
            raise DataError(f"{path}: line {line}: {_not_utf8(e, column)}") from None
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise DataError(f"{path}: line {e.lineno}: invalid JSON ({e.msg})") from None
        except (ValueError, RecursionError) as e:  # no position to name: the document as a whole
            raise DataError(f"{path}: invalid JSON ({json_problem(e)})") from None
        if isinstance(data, dict):
            data = data.get("data", data.get("examples"))
        if not isinstance(data, list):
            raise DataError(f"{path}: expected a JSON list of rows (or {{'data': [...]}})")
        for i, row in enumerate(data, start=1):
            yield f"item {i}", row if isinstance(row, dict) else TypeError(f"expected an object, got {type(row).__name__}")
    elif suffix in (".jsonl", ".ndjson"):
        with open(path, "rb") as f:  # decoded line by line, so a bad byte is one bad row, not a dead file
            for i, raw_line in enumerate(f, start=1):
                try:
                    line = raw_line.decode("utf-8")
                except UnicodeDecodeError as e:
                    yield f"line {i}", ValueError(_not_utf8(e, e.start + 1))
                    continue
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except (ValueError, RecursionError) as e:
                    yield f"line {i}", ValueError(f"invalid JSON ({json_problem(e)})")
                    continue
                yield f"line {i}", row if isinstance(row, dict) else TypeError(f"expected an object, got {type(row).__name__}")
    else:
        raise DataError(f"{path}: unknown data format {suffix!r}; use .jsonl, .json or .parquet")


def read_qa(path: str | Path, *, skip_bad: bool = False, data_source: str | None = None,
            report: ReadReport | None = None) -> list[QARecord]:
    """Read a QA file into QARecords. Bad rows raise DataError (file, row, field) unless `skip_bad`."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"data file not found: {path}")
    report = report if report is not None else ReadReport(str(path))
    default_source = data_source or path.stem
    records: list[QARecord] = []
    seen: dict[str, str] = {}
    for loc, row in _raw_rows(path):
        try:
            if isinstance(row, Exception):
                raise row
            rec = record_from_row(row, default_source=default_source, fallback_id=f"{default_source}-{loc.split()[-1]}")
            if rec.id in seen:
                raise ValueError(f"duplicate id {rec.id!r} (first at {seen[rec.id]})")
            seen[rec.id] = loc
        except (KeyError, TypeError, ValueError) as e:
            what = f"missing field {e.args[0]}" if isinstance(e, KeyError) else str(e)
            msg = f"{path}: {loc}: {what}"
            if not skip_bad:
                raise DataError(msg) from None
            report.skipped += 1
            if len(report.reasons) < 5:
                report.reasons.append(msg)
            continue
        records.append(rec)
        report.read += 1
    return records


def load_qa(paths: str | Path | Iterable[str | Path], *, limit: int | None = None, seed: int = 0,
            skip_bad: bool = False) -> list[QARecord]:
    """Read one or more files (a comma-separated string works too); `limit` keeps a seeded sample of
    that many rows *per file*, in file order, so quick runs are reproducible and cover every dataset."""
    if isinstance(paths, (str, Path)):
        paths = [p for p in str(paths).split(",") if p]
    out: list[QARecord] = []
    for p in paths:
        rows = read_qa(p, skip_bad=skip_bad)
        out.extend(subsample(rows, limit, seed) if limit else rows)
    return out


def resolve_qa(spec: str, *, limit: int | None = None, seed: int = 0, world_dir: str | None = None,
               default_split: str = "test", world_config: dict[str, Any] | None = None,
               ) -> tuple[list[QARecord], Path | None]:
    """Records for a command's `--data`: QA files (comma-separated) and/or `world[:split]` (the built-in
    synthetic world, generated on first use; `world_config` holds WorldConfig fields for a non-default
    one); also the world folder when one was named."""
    from zerosearch.data.world import WorldConfig, cached_world

    records, world = [], None
    for part in [s for s in spec.split(",") if s]:
        if part == "world" or part.startswith("world:"):
            split = part.partition(":")[2] or default_split
            if split not in ("train", "dev", "test"):
                raise ValueError(f"--data {part}: the world's splits are train, dev and test")
            world = cached_world(WorldConfig(**world_config) if world_config else None, world_dir=world_dir)
            records += subsample(load_qa(world / f"{split}.jsonl"), limit, seed)
        else:
            records += load_qa(part, limit=limit, seed=seed)
    if not records:
        raise ValueError(f"--data {spec!r} has no questions")
    return records, world


def subsample(rows: list[QARecord], n: int | None, seed: int = 0) -> list[QARecord]:
    """A seeded sample of n rows per data_source, kept in their original order."""
    if n is None:
        return rows
    by_source: dict[str, list[int]] = {}
    for i, r in enumerate(rows):
        by_source.setdefault(r.data_source, []).append(i)
    keep: set[int] = set()
    for source, idx in sorted(by_source.items()):
        rng = random.Random(f"{seed}:{source}")
        keep.update(idx if len(idx) <= n else rng.sample(idx, n))
    return [r for i, r in enumerate(rows) if i in keep]


def write_qa(path: str | Path, records: Iterable[QARecord]) -> int:
    from zerosearch.io import atomic_write_jsonl

    return atomic_write_jsonl(path, (r.to_dict() for r in records))


def data_hash(records: Iterable[QARecord]) -> str:
    """A short content hash of a dataset (ids, questions, answers): recorded with every result."""
    h = hashlib.sha256()
    for r in records:
        h.update(json.dumps([r.id, r.question, r.golden_answers], ensure_ascii=False).encode())
    return h.hexdigest()[:16]
