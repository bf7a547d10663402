"""Local passage corpora (Search-R1 JSONL) and the on-disk index folders built from them.

A corpus is one passage a line: `{"id", "title"?, "contents"}`. Without `title`, Search-R1 corpora put it
as a quoted first line of `contents` (`"Title"\\ntext`), which `split_title` takes off.

Passage ids must be unique (a passage without an id is known by its row number): a duplicate is refused
naming both lines, or with `duplicate_ids="keep-first"` the later rows are left out of the index (and
counted), so one search never returns the same id twice.

Only the byte offset of each line is kept in memory; passages are read from the file when returned, so
a multi-GB corpus costs 8 bytes a passage. Indexes (BM25, embeddings) live in a folder keyed on the
corpus fingerprint and are rebuilt, atomically and under a file lock, when the corpus changes.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from zerosearch.engines.base import Document
from zerosearch.io import atomic_path, cache_dir

_EDGE = 1 << 20  # bytes hashed at each end of the corpus for its fingerprint
DUPLICATE_IDS = ("error", "keep-first")


def split_title(contents: str) -> tuple[str, str]:
    """`'"Title"\\ntext'` -> `("Title", "text")`; contents without a quoted first line have no title."""
    first, sep, rest = contents.partition("\n")
    if sep and len(first) >= 2 and first.startswith('"') and first.endswith('"'):
        return first[1:-1], rest
    return "", contents


def passage(row: Any, where: str) -> tuple[str | None, str, str]:
    """(id, title, text) of one corpus row or retrieved document; ValueError naming `where` and the field."""
    if not isinstance(row, dict):
        raise ValueError(f"{where}: expected a JSON object, got {type(row).__name__}")
    contents = row.get("contents")
    if not isinstance(contents, str):
        raise ValueError(f"{where}: field 'contents' {'is missing' if contents is None else 'must be a string'}")
    title = row.get("title")
    if title is not None and not isinstance(title, str):
        raise ValueError(f"{where}: field 'title' must be a string")
    doc_id = row.get("id")
    if doc_id is not None and not isinstance(doc_id, (str, int)):
        raise ValueError(f"{where}: field 'id' must be a string or an integer")
    quoted, rest = split_title(contents)
    if title is None:
        title, text = quoted, rest
    else:  # a corpus with both forms (e.g. the synthetic world): the quoted line would repeat the title
        text = rest if quoted == title else contents
    return (None if doc_id is None else str(doc_id)), title, text


def fingerprint(path: Path) -> str:
    """Changes whenever the corpus does: size, mtime and the first and last MiB of content.

    A full sha256 runs at ~0.4 GB/s here, i.e. ~35 s on every start for the 14 GB wiki-18 corpus, so
    only the ends are hashed; any ordinary edit also moves the mtime.
    """
    st = path.stat()
    h = hashlib.sha256(f"{st.st_size}:{st.st_mtime_ns}".encode())
    with open(path, "rb") as f:
        h.update(f.read(_EDGE))
        if st.st_size > _EDGE:
            f.seek(max(_EDGE, st.st_size - _EDGE))
            h.update(f.read(_EDGE))
    return h.hexdigest()[:16]


class Corpus:
    """A JSONL corpus addressed by row number (0-based, blank lines skipped), read lazily from disk."""

    def __init__(self, path: str | Path, starts: np.ndarray, ends: np.ndarray):
        self.path = Path(path)
        self.starts, self.ends = starts, ends  # row i is bytes [starts[i], ends[i]) of the file
        self._fd = os.open(self.path, os.O_RDONLY)  # os.pread needs no shared seek position: thread-safe

    @classmethod
    def scan(cls, path: str | Path, *, duplicate_ids: str = "error") -> tuple[Corpus, list[str], int]:
        """Read and validate every row; return the corpus, each passage's `title\\ntext` to index, and how
        many rows were left out as duplicates of an earlier id (`duplicate_ids="keep-first"`)."""
        if duplicate_ids not in DUPLICATE_IDS:
            raise ValueError(f"duplicate_ids must be one of {', '.join(DUPLICATE_IDS)}, got {duplicate_ids!r}")
        path = Path(path)
        starts: list[int] = []
        ends: list[int] = []
        texts: list[str] = []
        first_line: dict[str, int] = {}
        skipped = 0
        pos = 0
        with open(path, "rb") as f:
            for lineno, line in enumerate(f, start=1):
                if line.strip():
                    where = f"{path}:{lineno}"
                    try:
                        row = json.loads(line)
                    except (ValueError, RecursionError) as e:  # JSONDecodeError, UnicodeDecodeError, and
                        # what json.loads raises besides: too deep a document, an integer of > 4,300 digits
                        problem = "nested too deeply" if isinstance(e, RecursionError) else str(e).split(";")[0]
                        raise ValueError(f"{where}: invalid JSON ({problem})") from None
                    doc_id, title, text = passage(row, where)
                    key = doc_id if doc_id is not None else str(len(starts))  # what `doc` will call it
                    if key in first_line:
                        if duplicate_ids == "error":
                            raise ValueError(f"{where}: duplicate passage id {key!r} (first at "
                                             f"{path}:{first_line[key]}); give every passage its own id, or "
                                             "keep the first of each (--duplicate-ids keep-first)")
                        skipped += 1
                    else:
                        first_line[key] = lineno
                        starts.append(pos)
                        ends.append(pos + len(line))
                        texts.append(f"{title}\n{text}" if title else text)
                pos += len(line)
        if not texts:
            raise ValueError(f"{path}: the corpus has no passages")
        # Kept rows need not be adjacent once duplicates are left out: each has its own end.
        return cls(path, np.array(starts, dtype=np.int64), np.array(ends, dtype=np.int64)), texts, skipped

    def __len__(self) -> int:
        return len(self.starts)

    def doc(self, i: int, *, source: str, score: float | None = None) -> Document:
        start, end = int(self.starts[i]), int(self.ends[i])
        row = json.loads(os.pread(self._fd, end - start, start))
        doc_id, title, text = passage(row, f"{self.path}: row {i}")
        return Document(title=title, text=text, source=source, id=doc_id if doc_id is not None else str(i),
                        score=score)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def index_location(corpus: Path, index_dir: str | None, suffix: str) -> Path:
    """Beside the corpus when its folder is writable, else under `index_dir` or the zerosearch cache."""
    if index_dir is None and os.access(corpus.parent, os.W_OK):
        return corpus.with_name(f"{corpus.name}.{suffix}")
    # A short hash of the corpus path keeps two corpora with the same file name apart.
    tag = hashlib.sha256(str(corpus.resolve()).encode()).hexdigest()[:8]
    root = Path(index_dir) if index_dir is not None else cache_dir("indexes")
    return root / f"{corpus.stem}-{tag}.{suffix}"


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive inter-process lock, so that workers starting together build an index only once."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _read_meta(folder: Path) -> dict[str, Any] | None:
    try:
        return json.loads((folder / "meta.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def open_index(corpus_path: str | Path, *, index_dir: str | None, suffix: str, params: dict[str, Any],
               build: Callable[[list[str], Path], None], duplicate_ids: str = "error"
               ) -> tuple[Corpus, Path, dict[str, Any]]:
    """The corpus and its index folder, reused when it was built from this corpus with these `params`.

    `build(texts, folder)` writes the engine's files into a fresh folder that replaces the old one only
    once complete; `params` must name everything else the index depends on (model, tokenizer, ...).
    Returns (corpus, folder, meta): `meta["key"]["fingerprint"]` identifies the corpus, `meta["built_now"]`
    says whether this call built the index, `meta["duplicates_skipped"]` how many rows keep-first left out.
    """
    corpus_path = Path(corpus_path)
    if not corpus_path.is_file():
        raise FileNotFoundError(f"corpus not found: {corpus_path}")
    key = {"fingerprint": fingerprint(corpus_path), **params, "duplicate_ids": duplicate_ids}
    folder = index_location(corpus_path, index_dir, suffix)
    meta = _read_meta(folder)
    if meta is None or meta.get("key") != key:
        with _locked(folder):
            meta = _read_meta(folder)  # another process may have built it while we waited
            if meta is None or meta.get("key") != key:
                t0 = time.perf_counter()
                corpus, texts, skipped = Corpus.scan(corpus_path, duplicate_ids=duplicate_ids)
                with atomic_path(folder, is_dir=True) as tmp:
                    np.save(tmp / "starts.npy", corpus.starts)
                    np.save(tmp / "ends.npy", corpus.ends)
                    build(texts, tmp)
                    meta = {"key": key, "corpus": str(corpus_path), "passages": len(corpus),
                            "duplicates_skipped": skipped, "build_s": round(time.perf_counter() - t0, 3)}
                    (tmp / "meta.json").write_text(json.dumps(meta, indent=1), encoding="utf-8")
                return corpus, folder, {**meta, "built_now": True}
    return Corpus(corpus_path, np.load(folder / "starts.npy"), np.load(folder / "ends.npy")), folder, \
        {**meta, "built_now": False}
