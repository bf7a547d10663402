"""The per-query noise draw of the simulated engine: useful or noisy documents, with probability p.

It lives in the engine layer because the engine draws (`SimulatedEngine` reads each request's
`noise_prob`); `zerosearch.training.curriculum` only computes p(step) and re-exports `draw_mode` for callers that
drew through it before.

A certain outcome (p = 0 or p = 1) is returned without touching the RNG. Otherwise a dev evaluation
through the training engine (noise 0) would consume the training engine's RNG, so how often one evaluates
(`eval_every`) would change which queries of later training steps get noise.
"""

from __future__ import annotations

import random

from zerosearch.engines.base import DocMode


def check_prob(name: str, p: float) -> float:
    """`p` as a float, or a ValueError naming `name` when it is not a probability in [0, 1]."""
    p = float(p)
    if not 0.0 <= p <= 1.0:  # also rejects NaN
        raise ValueError(f"{name} must be a probability in [0, 1], got {p}")
    return p


def draw_mode(p: float, rng: random.Random) -> DocMode:
    """'noisy' with probability `p`, else 'useful'. The RNG is explicit so draws are reproducible; it is
    consumed only when the outcome is uncertain (0 < p < 1)."""
    p = check_prob("noise probability", p)
    if p == 0.0:
        return "useful"
    if p == 1.0:
        return "noisy"
    return "noisy" if rng.random() < p else "useful"
