"""The paired statistics against values computed by hand."""

from __future__ import annotations

import math

import pytest

from zerosearch.evaluation.stats import bootstrap_ci, mcnemar_exact, mde_paired, paired_delta_ci


def test_mcnemar_exact_against_hand_computed_binomial_tails() -> None:
    # 1 vs 5 discordant: P(X <= 1 | n=6) = (1 + 6) / 64, two-sided 14 / 64
    assert mcnemar_exact(1, 5) == pytest.approx(14 / 64)
    assert mcnemar_exact(5, 1) == mcnemar_exact(1, 5)
    # 0 vs 10: 2 / 1024
    assert mcnemar_exact(0, 10) == pytest.approx(2 / 1024)
    # 3 vs 3: the tail is over half the mass, capped at 1
    assert mcnemar_exact(3, 3) == 1.0 and mcnemar_exact(0, 0) == 1.0
    # 2 vs 8: (1 + 10 + 45) / 1024 * 2 = 112 / 1024
    assert mcnemar_exact(2, 8) == pytest.approx(112 / 1024)
    with pytest.raises(ValueError):
        mcnemar_exact(-1, 2)


def test_paired_delta_ci_against_hand_computed_values() -> None:
    # n = 100, 10 gained, 4 lost: delta 0.06, se = sqrt(14 - 36/100) / 100 = 0.0369324
    d, lo, hi = paired_delta_ci(10, 4, 100)
    se = math.sqrt(13.64) / 100
    assert d == pytest.approx(0.06)
    assert lo == pytest.approx(0.06 - 1.959964 * se, abs=1e-6) and hi == pytest.approx(0.06 + 1.959964 * se, abs=1e-6)
    assert paired_delta_ci(0, 0, 50) == (0.0, 0.0, 0.0)
    with pytest.raises(ValueError):
        paired_delta_ci(60, 50, 100)


def test_bootstrap_ci_is_paired_and_seeded() -> None:
    x = [0, 1, 0, 1, 1, 0, 0, 1] * 8
    assert bootstrap_ci(x, [v + 1 for v in x]) == (1.0, 1.0, 1.0)  # a constant difference has no spread
    y = [1, 1, 0, 1, 1, 1, 0, 1] * 8  # 2 of 8 gained
    d, lo, hi = bootstrap_ci(x, y, seed=3)
    assert d == pytest.approx(0.25) and lo < 0.25 < hi and 0.1 < lo and hi < 0.4
    assert bootstrap_ci(x, y, seed=3) == (d, lo, hi)
    with pytest.raises(ValueError):
        bootstrap_ci([1], [1, 0])


def test_mde_against_the_hand_computed_normal_approximation() -> None:
    # n = 256, 20 % discordant, alpha 0.05, power 0.8: (1.959964 + 0.841621) * sqrt(0.2 / 256) = 0.078287
    assert mde_paired(256, 0.2) == pytest.approx(2.801585 * math.sqrt(0.2 / 256), rel=1e-5)
    assert mde_paired(1024, 0.2) == pytest.approx(mde_paired(256, 0.2) / 2)  # 4x the questions, half the MDE
