"""The viewer page: one self-contained HTML file (inline CSS, JS, SVG; no network).

The trajectories travel as JSON in a `<script type="application/json">` element, with every `<` written
`\\u003c`, so no string the model or the simulator wrote can close the element or open a tag; the page's
script (assets/viewer.js) renders one page of trajectories at a time, HTML-escaping every string it
inserts. The training curves are static SVG written here (labels escaped with html.escape).
"""

from __future__ import annotations

import html
import json
import math
from importlib import resources
from typing import Any

from zerosearch.prompts import FORCE_ANSWER, INFORMATION, INVALID_ACTION
from zerosearch.viewer.build import FLAGS, Run, compare_pairs

CHART_KEYS = (("reward", "reward"), ("em", "EM"), ("f1", "F1"), ("kl", "KL"),
              ("response_tokens", "response length (tokens)"), ("searches", "searches / question"),
              ("noise_prob", "noise probability"), ("dev/reward", "dev reward"), ("dev/em", "dev EM"))
COLORS = ("#2563eb", "#dc2626")
W, H, PAD = 240, 110, 26


def _asset(name: str) -> str:
    return resources.files("zerosearch.viewer").joinpath("assets", name).read_text(encoding="utf-8")


def embed_json(data: Any) -> str:
    """JSON safe inside a <script> element: `<` as \\u003c (no `</script>`, no `<!--`); U+2028/9 escaped."""
    text = json.dumps(data, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    return text.replace("<", "\\u003c").replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")


def _finite(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def chart_svg(title: str, series: list[tuple[str, list[tuple[float, float]]]]) -> str:
    """A small line chart: one polyline per (label, [(step, value)]) series, min/max of both axes."""
    pts = [p for _, s in series for p in s]
    x0, x1 = min(p[0] for p in pts), max(p[0] for p in pts)
    y0, y1 = min(p[1] for p in pts), max(p[1] for p in pts)
    if y0 == y1:  # a flat line: in the middle, not on the frame
        y0, y1 = y0 - (abs(y0) or 1) / 2, y1 + (abs(y1) or 1) / 2
    sx = (W - 2 * PAD) / ((x1 - x0) or 1)
    sy = (H - 2 * PAD) / ((y1 - y0) or 1)
    lines = []
    for (label, s), color in zip(series, COLORS):
        xy = " ".join(f"{PAD + (x - x0) * sx:.1f},{H - PAD - (y - y0) * sy:.1f}" for x, y in s)
        dots = "".join(f'<circle cx="{PAD + (x - x0) * sx:.1f}" cy="{H - PAD - (y - y0) * sy:.1f}" r="1.8" '
                       f'fill="{color}"/>' for x, y in s) if len(s) < 40 else ""
        lines.append(f'<polyline fill="none" stroke="{color}" stroke-width="1.5" points="{xy}">'
                     f'<title>{html.escape(label)}</title></polyline>{dots}')
    return (f'<figure class="chart"><svg viewBox="0 0 {W} {H}" width="{W}" height="{H}" role="img" '
            f'aria-label="{html.escape(title)}"><rect x="{PAD}" y="{PAD}" width="{W - 2 * PAD}" '
            f'height="{H - 2 * PAD}" class="frame"/>{"".join(lines)}'
            f'<text x="{PAD - 3}" y="{PAD + 4}" text-anchor="end">{_num(y1)}</text>'
            f'<text x="{PAD - 3}" y="{H - PAD}" text-anchor="end">{_num(y0)}</text>'
            f'<text x="{PAD}" y="{H - PAD + 12}">{_num(x0)}</text>'
            f'<text x="{W - PAD}" y="{H - PAD + 12}" text-anchor="end">step {_num(x1)}</text></svg>'
            f'<figcaption>{html.escape(title)}</figcaption></figure>')


def _num(x: float) -> str:
    return f"{x:.3g}" if isinstance(x, float) else str(x)


def charts_html(runs: list[Run]) -> str:
    out = []
    for key, title in CHART_KEYS:
        series = []
        for run in runs:
            pts = [(r["step"], r[key]) for r in run.metrics if _finite(r.get(key)) and _finite(r.get("step"))]
            if pts:
                series.append((run.label, pts))
        if series:
            out.append(chart_svg(title, series))
    if not out:
        return ""
    legend = "".join(f'<span class="legend" style="color:{c}">&#9632; {html.escape(r.label)}</span>'
                     for r, c in zip(runs, COLORS) if r.metrics) if len(runs) > 1 else ""
    return f'<section id="charts"><h2>Training curves {legend}</h2><div class="charts">{"".join(out)}</div></section>'


def payload(runs: list[Run]) -> dict[str, Any]:
    traj: list[dict[str, Any]] = []
    for r, run in enumerate(runs):
        for t in run.trajectories:
            traj.append({**t, "run": r})
    pairs = only = None
    if len(runs) == 2:
        pairs = compare_pairs(runs[0].trajectories, runs[1].trajectories, len(runs[0].trajectories))
        keys = [{t["key"] for t in run.trajectories} for run in runs]
        only = [len(keys[0] - keys[1]), len(keys[1] - keys[0])]
    return {
        "runs": [{"label": run.label, "path": str(run.path), "kind": run.kind, "n": len(run.trajectories),
                  "notes": run.notes} for run in runs],
        "traj": traj, "pairs": pairs, "only": only,
        "flags": {name: list(v) for name, v in FLAGS.items()},
        "inserted": {"invalid": INVALID_ACTION, "force": FORCE_ANSWER, "info": INFORMATION.split("{documents}")},
    }


TEMPLATE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'; \
script-src 'unsafe-inline'; img-src data:">
<title>{title}</title>
<style>{css}</style></head>
<body>
<header id="top"><h1>{title}</h1><div id="runs"></div><div id="notes"></div></header>
{charts}
<section id="filters" aria-label="filters">
  <label id="l-src">source <select id="f-src"><option value="">all</option></select></label>
  <label id="l-step">step <input id="f-step-min" type="number" placeholder="min"> to
    <input id="f-step-max" type="number" placeholder="max"></label>
  <label id="l-rw">reward <input id="f-rw-min" type="number" step="0.05" placeholder="min"> to
    <input id="f-rw-max" type="number" step="0.05" placeholder="max"></label>
  <label>answer <select id="f-correct"><option value="">all</option><option value="1">correct (EM 1)</option>
    <option value="0">incorrect</option></select></label>
  <label>engine <select id="f-engine"><option value="">all</option></select></label>
  <label>flag <select id="f-flag"><option value="">all</option></select></label>
  <label>text <input id="f-text" type="search" placeholder="question, query, document, answer..."></label>
  <label id="l-differ"><input id="f-differ" type="checkbox"> differing only</label>
  <button id="f-reset" type="button">reset</button>
</section>
<div id="summary"><span id="count">0</span> of <span id="total">0</span> <span id="unit">trajectories</span>
  <span id="flag-counts"></span></div>
<nav class="pager" id="pager-top"></nav>
<main id="list"></main>
<nav class="pager" id="pager-bottom"></nav>
<footer>zerosearch view &middot; shading: <span class="tok-trained">trained on</span>
  <span class="tok-masked">masked (prompt, inserted)</span> as recorded in samples.jsonl</footer>
<script type="application/json" id="zs-data">{data}</script>
<script>{js}</script>
</body></html>
"""


def render_page(runs: list[Run], title: str | None = None) -> str:
    if not runs or len(runs) > 2:
        raise ValueError("the viewer shows one run, or two with --compare")
    title = title or ("zerosearch: " + " vs ".join(run.label for run in runs))
    return TEMPLATE.format(title=html.escape(title), css=_asset("viewer.css"), charts=charts_html(runs),
                           data=embed_json(payload(runs)), js=_asset("viewer.js"))
