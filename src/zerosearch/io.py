"""Small file helpers used everywhere: atomic writes and JSONL.

Anything the project writes that a later run reads (checkpoints, caches, metrics, results) goes through
`atomic_write*`, so a crash never leaves a half-written file in place of a good one.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, *, is_dir: bool = False) -> Iterator[Path]:
    """Yield a temporary sibling of `path`; on success rename it over `path`, on error delete it.

    Works for files and directories (e.g. a model checkpoint written by `save_pretrained`).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if is_dir:
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
        tmp.chmod(0o777 & ~_umask())  # mkdtemp/mkstemp make it private; the result should read like any file
    else:
        fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        tmp = Path(name)
        tmp.chmod(0o666 & ~_umask())
    try:
        yield tmp
        if is_dir:
            old = None
            if path.exists():
                old = path.with_name(f".{path.name}.old-{os.getpid()}")
                path.rename(old)
            tmp.rename(path)
            if old is not None:
                shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    except BaseException:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())


def atomic_write_jsonl(path: str | os.PathLike, rows: Iterable[dict[str, Any]]) -> int:
    n = 0
    with atomic_path(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            for row in rows:
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
                n += 1
            f.flush()
            os.fsync(f.fileno())
    return n


def append_jsonl(path: str | os.PathLike, row: dict[str, Any]) -> None:
    """Append one JSON line and flush it to disk.

    A crash can at worst leave a truncated *last* line, which `read_jsonl(..., tolerate_partial_tail=True)`
    drops; lines already written are never touched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(row, ensure_ascii=False) + "\n")
        f.flush()
        os.fsync(f.fileno())


def read_jsonl(path: str | os.PathLike, *, tolerate_partial_tail: bool = False) -> list[dict[str, Any]]:
    """Read a JSONL file; a bad line raises ValueError naming the file and line."""
    path = Path(path)
    rows: list[dict[str, Any]] = []
    with open(path, encoding="utf-8") as f:
        lines = f.readlines()
    for i, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            if tolerate_partial_tail and i == len(lines) and not line.endswith("\n"):
                break  # an interrupted append; everything before it is intact
            raise ValueError(f"{path}:{i}: invalid JSON ({e.msg})") from None
        if not isinstance(row, dict):
            raise ValueError(f"{path}:{i}: expected a JSON object, got {type(row).__name__}")
        rows.append(row)
    return rows


def truncate_jsonl(path: str | os.PathLike, keep: Callable[[dict[str, Any]], bool] = lambda row: True
                   ) -> list[dict[str, Any]]:
    """Resume an append-only JSONL after a crash: return the rows `keep` accepts and, if anything else is
    there (rows it rejects, a line cut short by the crash), rewrite the file atomically to exactly those
    rows, so the next append continues a clean file. A missing file gives []."""
    path = Path(path)
    if not path.exists():
        return []
    rows = read_jsonl(path, tolerate_partial_tail=True)
    kept = [row for row in rows if keep(row)]
    with open(path, "rb") as f:
        size = f.seek(0, os.SEEK_END)
        if size:
            f.seek(size - 1)
        cut_tail = size > 0 and f.read(1) != b"\n"
    if len(kept) < len(rows) or cut_tail:
        atomic_write_jsonl(path, kept)
    return kept


def cache_dir(*parts: str) -> Path:
    """The zerosearch cache root (`$ZEROSEARCH_CACHE` or `~/.cache/zerosearch`), joined with `parts`."""
    root = os.environ.get("ZEROSEARCH_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "zerosearch"
    )
    p = Path(root, *parts)
    p.mkdir(parents=True, exist_ok=True)
    return p
