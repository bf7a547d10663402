"""The trajectory viewer: `zerosearch view RUN [--compare OTHER]` writes one self-contained HTML page.

    build.py   training runs, evaluation outputs and demo runs -> one trajectory schema
    page.py    the page: embedded JSON, inline CSS/JS (assets/), SVG training curves
    (zerosearch.training.mask_runs: the loss mask as text runs, the form samples.jsonl records it in)
"""

from __future__ import annotations

from pathlib import Path

from zerosearch.viewer.build import Run, load_run


def default_out(spec: str | Path) -> Path:
    """viewer.html in the run's folder (the file's folder when given a file)."""
    path = Path(spec)
    return (path if path.is_dir() else path.parent) / "viewer.html"


def write_page(spec: str | Path, out: str | Path | None = None,
               compare: str | Path | None = None) -> tuple[Path, list[Run]]:
    """Load `spec` (and `compare`), write the page atomically; return its path and the runs shown."""
    from zerosearch.io import atomic_write_text
    from zerosearch.viewer.page import render_page

    runs = [load_run(spec)] + ([load_run(compare)] if compare is not None else [])
    if len(runs) == 2 and runs[0].label == runs[1].label:
        runs[0].label, runs[1].label = str(spec), str(compare)
    out = Path(out) if out is not None else default_out(spec)
    atomic_write_text(out, render_page(runs))
    return out, runs


__all__ = ["Run", "default_out", "load_run", "write_page"]
