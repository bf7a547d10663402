"""Noise schedules: the paper's exponential curriculum, the fixed ablation, and seeded mode draws."""

import json
import random

import pytest

from zerosearch.training.curriculum import Curriculum, FixedSchedule, draw_mode, schedule_from_state


def test_endpoints_and_clamping():
    c = Curriculum(0.1, 0.6, total_steps=100)
    assert c.p(0) == pytest.approx(0.1) and c.p(100) == pytest.approx(0.6)
    assert c.p(-5) == pytest.approx(0.1) and c.p(250) == pytest.approx(0.6)  # outside [0, m]: clamped
    assert c(50) == c.p(50)


def test_known_values_of_the_public_setting():
    # README setting 0 -> 0.5 over 203 steps: slow start, fast end (method note, section 4).
    c = Curriculum(0.0, 0.5, total_steps=203)
    assert c.p(50) == pytest.approx(0.07, abs=0.005)
    assert c.p(101) == pytest.approx(0.17, abs=0.005)
    assert c.p(150) == pytest.approx(0.30, abs=0.005)
    assert c.p(203) == pytest.approx(0.5)
    # convex for b > 1: below the straight line everywhere inside
    assert all(c.p(i) < 0.5 * i / 203 for i in range(1, 203))


def test_monotone_both_directions_and_any_base():
    for base in (0.25, 0.9, 1.0, 1.5, 4.0, 100.0):
        up = [Curriculum(0.0, 0.75, 60, base).p(i) for i in range(61)]
        down = [Curriculum(0.5, 0.25, 60, base).p(i) for i in range(61)]
        assert up == sorted(up) and down == sorted(down, reverse=True)
    assert Curriculum(0.3, 0.3, 10).p(5) == pytest.approx(0.3)


def test_base_one_is_the_linear_limit():
    lin = Curriculum(0.0, 0.5, 200, base=1.0)
    assert [lin.p(i) for i in (0, 50, 100, 150, 200)] == pytest.approx([0.0, 0.125, 0.25, 0.375, 0.5])
    near = Curriculum(0.0, 0.5, 200, base=1.0 + 1e-6)  # the formula itself converges to the same line
    assert near.p(77) == pytest.approx(lin.p(77), abs=1e-6)


@pytest.mark.parametrize("args", [
    (-0.1, 0.5, 10), (0.0, 1.5, 10), (float("nan"), 0.5, 10), (0.0, 0.5, 0), (0.0, 0.5, -3), (0.0, 0.5, 2.5),
    (0.0, 0.5, True), (0.0, 0.5, 10, 0.0), (0.0, 0.5, 10, -4.0), (0.0, 0.5, 10, float("inf")),
])
def test_invalid_arguments(args):
    with pytest.raises(ValueError):
        Curriculum(*args)


def test_fixed_schedule_is_the_random_ablation():
    f = FixedSchedule(0.5)
    assert [f.p(i) for i in (0, 10, 10**6)] == [0.5, 0.5, 0.5]
    with pytest.raises(ValueError):
        FixedSchedule(1.01)


def test_state_round_trip_through_json():
    c = Curriculum(0.25, 0.5, 300, base=3.0)
    state = json.loads(json.dumps(c.state_dict()))
    fresh = Curriculum(0.0, 1.0, 1)
    fresh.load_state_dict(state)
    assert [fresh.p(i) for i in range(0, 301, 30)] == [c.p(i) for i in range(0, 301, 30)]
    assert repr(schedule_from_state(state)) == repr(c)
    f = schedule_from_state(FixedSchedule(0.2).state_dict())
    assert isinstance(f, FixedSchedule) and f.p(3) == 0.2
    with pytest.raises(ValueError):
        fresh.load_state_dict(FixedSchedule(0.2).state_dict())
    with pytest.raises(ValueError):
        fresh.load_state_dict({**state, "p_end": 2.0})  # validated on load too
    with pytest.raises(ValueError):
        schedule_from_state({"kind": "cosine"})


def test_draw_frequencies_are_seeded():
    for p in (0.0, 0.17, 0.5, 1.0):
        rng = random.Random(7)
        draws = [draw_mode(p, rng) for _ in range(20_000)]
        assert draws.count("noisy") / len(draws) == pytest.approx(p, abs=0.015)
        assert set(draws) <= {"useful", "noisy"}
    a, b = random.Random(3), random.Random(3)
    assert [draw_mode(0.4, a) for _ in range(100)] == [draw_mode(0.4, b) for _ in range(100)]
    with pytest.raises(ValueError):
        draw_mode(1.2, random.Random(0))
