"""Paired comparisons of two policies on the same questions: is a change in EM more than noise?

Two policies answer the same n questions; per question each is right (1) or wrong (0). Only the discordant
questions carry information about the difference: g = right now, wrong before ("gained"), l = the reverse
("lost"). The change in accuracy is delta = (g - l) / n.

- `mcnemar_exact(g, l)`: McNemar's exact test. Under "no difference" each discordant question is a fair
  coin, so min(g, l) ~ Binomial(g + l, 1/2); two-sided p = min(1, 2 P(X <= min(g, l))).
- `paired_delta_ci(g, l, n)`: delta with its normal-approximation CI; the variance of the paired difference
  is (g + l - (g - l)^2 / n) / n^2 (per-question differences are -1, 0 or +1).
- `bootstrap_ci(x, y)`: percentile bootstrap over questions of mean(y - x), for any per-question score
  (EM, F1, searches), resampling questions, never the two policies separately.
- `mde_paired(n, discordant)`: the smallest |delta| a two-sided test at `alpha` detects with probability
  `power`, when a fraction `discordant` of questions is discordant: (z_{1-alpha/2} + z_power) sqrt(psi / n).
  A "no effect found" is only informative next to this number.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from statistics import NormalDist


def _binom_cdf_half(k: int, n: int) -> float:
    """P(X <= k) for X ~ Binomial(n, 1/2), exactly (integer arithmetic, then one division)."""
    return sum(math.comb(n, i) for i in range(k + 1)) / 2**n


def mcnemar_exact(gained: int, lost: int) -> float:
    """Two-sided exact McNemar p-value from the two discordant counts."""
    if gained < 0 or lost < 0:
        raise ValueError(f"counts must be >= 0, got {gained}, {lost}")
    n = gained + lost
    if n == 0:
        return 1.0
    return min(1.0, 2 * _binom_cdf_half(min(gained, lost), n))


def paired_delta_ci(gained: int, lost: int, n: int, level: float = 0.95) -> tuple[float, float, float]:
    """(delta, low, high): the change in accuracy and its CI at `level` (normal approximation)."""
    if n <= 0 or gained + lost > n:
        raise ValueError(f"need n > 0 and gained + lost <= n, got {gained}, {lost}, {n}")
    delta = (gained - lost) / n
    se = math.sqrt(max(gained + lost - (gained - lost) ** 2 / n, 0.0)) / n
    z = NormalDist().inv_cdf(0.5 + level / 2)
    return delta, delta - z * se, delta + z * se


def bootstrap_ci(x: Sequence[float], y: Sequence[float], *, reps: int = 2000, level: float = 0.95,
                 seed: int = 0) -> tuple[float, float, float]:
    """(mean(y - x), low, high): percentile bootstrap over the paired questions."""
    if len(x) != len(y) or not x:
        raise ValueError(f"need two equally long, non-empty score lists, got {len(x)} and {len(y)}")
    d = [b - a for a, b in zip(x, y)]
    n, rng = len(d), random.Random(seed)
    means = sorted(sum(d[rng.randrange(n)] for _ in range(n)) / n for _ in range(reps))
    lo = means[int(math.floor((1 - level) / 2 * (reps - 1)))]
    hi = means[int(math.ceil((1 + level) / 2 * (reps - 1)))]
    return sum(d) / n, lo, hi


def mde_paired(n: int, discordant: float, *, alpha: float = 0.05, power: float = 0.8) -> float:
    """Minimum detectable |delta| (as a fraction) for n paired questions, a fraction `discordant` of them
    discordant (normal approximation to McNemar's test)."""
    if n <= 0 or not 0 <= discordant <= 1:
        raise ValueError(f"need n > 0 and 0 <= discordant <= 1, got {n}, {discordant}")
    z = NormalDist()
    return (z.inv_cdf(1 - alpha / 2) + z.inv_cdf(power)) * math.sqrt(discordant / n)
