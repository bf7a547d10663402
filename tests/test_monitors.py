"""Training-health rules on scripted inputs: collapses (a falling reward, exploding entropy / KL, runaway
length, a dropping valid-action rate, NaN), the failed-search policy and the start-up engine check."""

from __future__ import annotations

import math

import pytest
from fakes import StatelessSimBackend

from zerosearch.engines.base import Document, SearchEngine, SearchRequest
from zerosearch.training.monitors import (
    CollapseMonitor,
    EngineCheckError,
    EngineCounters,
    FailedSearchPolicy,
    MonitorSettings,
    TrainingHalted,
    check_engine,
    counter_note,
    search_failures,
)

STEADY = {"reward": 0.5, "entropy": 1.0, "kl": 0.01, "response_tokens": 100.0, "valid_action_rate": 0.9,
          "answered_rate": 0.9}


def feed(monitor: CollapseMonitor, rows: list[dict]) -> list[list[str]]:
    return [monitor.update({**STEADY, **r}) for r in rows]


def test_steady_training_raises_no_alarm():
    assert feed(CollapseMonitor(MonitorSettings(window=3)), [{}] * 20) == [[]] * 20


def test_a_falling_reward_raises_the_reward_alarm_once_the_window_mean_halves():
    # window 2, drop 0.5: best window mean 0.8 (steps 1-2); the mean falls below 0.4 at step 5 (0.3, 0.3 -> 0.3)
    rewards = [0.8, 0.8, 0.6, 0.4, 0.2, 0.1]
    alarms = feed(CollapseMonitor(MonitorSettings(window=2)), [{"reward": r} for r in rewards])
    # window means: -, 0.8, 0.7, 0.5, 0.3, 0.15 -> below 0.4 from step 5 on
    assert ["reward" in a for a in alarms] == [False, False, False, False, True, True]


def test_a_random_policys_near_zero_reward_is_no_peak_to_fall_from():
    alarms = feed(CollapseMonitor(MonitorSettings(window=2, min_reward=0.05)),
                  [{"reward": r} for r in (0.04, 0.04, 0.0, 0.0)])
    assert not any("reward" in a for a in alarms)


def test_entropy_kl_and_length_blowing_up():
    m = CollapseMonitor(MonitorSettings(window=2, entropy_growth=3.0, kl_max=1.0, length_growth=2.0))
    alarms = feed(m, [{}, {}, {"entropy": 5.0}, {"entropy": 5.0, "kl": 0.5}, {"kl": 2.5},
                      {"response_tokens": 400.0}, {"response_tokens": 400.0}])
    # entropy window means: 1, 1, 3 (not > 3 x 1), 5 (step 4), 3 again; kl 2.5 > 1 at step 5;
    # length means 250 and 400 (> 2 x 100) at steps 6 and 7
    assert [sorted(a) for a in alarms] == [[], [], [], ["entropy"], ["kl"], ["length"], ["length"]]


def test_an_exploding_log_ratio_raises_the_kl_alarm_and_a_nan_the_nonfinite_one():
    from torch import tensor

    from zerosearch.algorithms.kl import kl_penalty

    m = CollapseMonitor(MonitorSettings(window=2))
    kl = float(kl_penalty(tensor([0.0, -30.0]), tensor([0.0, 0.0]), "k3").mean())  # one runaway token
    assert kl == pytest.approx(5.0)  # k3 clamped at 10 (veRL): mean of 0 and 10
    assert m.update({**STEADY, "kl": kl}) == ["kl"]
    assert m.update({**STEADY, "pg_loss": math.nan}) == ["nonfinite"]
    assert m.update({**STEADY, "nonfinite": 3}) == ["nonfinite"]
    assert m.update({**STEADY, "kl": math.inf}) == ["kl"]


def test_a_dropping_valid_action_rate():
    m = CollapseMonitor(MonitorSettings(window=1, valid_action_drop=0.5))
    assert feed(m, [{"valid_action_rate": 0.8}, {"valid_action_rate": 0.5}, {"valid_action_rate": 0.3}]) == \
        [[], [], ["valid_action"]]


def test_stop_needs_the_setting_and_patience_and_survives_a_checkpoint():
    rows = [{"kl": 5.0}] * 3
    m = CollapseMonitor(MonitorSettings(kl_max=1.0, patience=3))
    feed(m, rows)
    assert not m.should_stop()  # stop_on_collapse is off
    m = CollapseMonitor(MonitorSettings(kl_max=1.0, patience=3, stop_on_collapse=True))
    feed(m, rows[:2])
    assert not m.should_stop()
    resumed = CollapseMonitor(MonitorSettings(kl_max=1.0, patience=3, stop_on_collapse=True))
    resumed.load_state_dict(m.state_dict())
    feed(resumed, rows[:1])
    assert resumed.should_stop()
    feed(resumed, [{}])
    assert not resumed.should_stop()  # an alarm-free step resets the streak


def doc(text: str, **meta) -> Document:
    return Document(title="", text=text, source="x", meta=meta)


def test_search_failures_count_fallbacks_not_empty_results():
    rows = [[[doc("ok")], [doc("No results found.")]], [[]], [[doc("x", fallback=True)], [doc("fine")]]]
    assert search_failures(rows) == (2, 5)  # row 2's empty result is the engine's answer, not a failure
    assert search_failures([[[], []]]) == (0, 2)  # a BM25 that matched nothing is working
    assert search_failures([[], []]) == (0, 0)


def test_failed_search_policy_skips_and_halts_after_the_consecutive_limit():
    p = FailedSearchPolicy(max_share=0.5, max_consecutive=2)
    assert p.skip(1, 2) is False  # exactly half: trained on
    assert p.skip(0, 0) is False  # no searches: nothing failed
    assert p.skip(2, 3) is True and p.skipped == 1
    assert p.skip(0, 3) is False and p.consecutive == 0
    assert p.skip(3, 3) is True
    with pytest.raises(TrainingHalted, match="2 steps in a row skipped, the last because 3 of 3 searches failed"):
        p.skip(3, 3)


class Scripted(SearchEngine):
    name = "scripted"

    def __init__(self, result=None, error: Exception | None = None):
        self.result, self.error, self.n = result, error, 0

    def search(self, requests):
        if self.error is not None:
            raise self.error
        self.n += 1
        return [self.result for _ in requests]

    def stats(self):
        return {"requests": self.n, "leak_flagged": 2 * self.n, "note": "x", "flag": True}


REQ = SearchRequest(query="who wrote it", k=3, question="who wrote it?", golden_answers=["A"], mode="useful")


def test_check_engine_fails_fast_with_one_line():
    check_engine(Scripted([doc("a result")]), REQ, "training")
    with pytest.raises(EngineCheckError, match=r"^training engine 'scripted' failed its start-up query "
                                               r"'who wrote it': ConnectionError: refused$"):
        check_engine(Scripted(error=ConnectionError("refused")), REQ, "training")
    with pytest.raises(EngineCheckError, match=r"dev engine 'scripted' returned no usable documents.*\(HTTP 500\)"):
        check_engine(Scripted([doc("No results found.", fallback=True, error="HTTP 500")]), REQ, "dev")
    with pytest.raises(EngineCheckError, match="no usable documents"):
        check_engine(Scripted([]), REQ, "training")


def test_check_engine_leaves_a_simulators_rng_as_it_was():
    from zerosearch.engines.simulated import SimulatedEngine
    from zerosearch.engines.sim_backends import Generation

    class Echo(StatelessSimBackend):  # a simulator backend writing one document per prompt
        def generate(self, prompts, stop, prefix):
            return [Generation(text=" a document", finish_reason="stop") for _ in prompts]

        def identity(self):
            return "echo"

    def draws(engine):
        reqs = [SearchRequest(query=f"q{i}", k=1, question="q?", golden_answers=["A"], noise_prob=0.5) for i in range(20)]
        return [d[0].meta["mode"] for d in engine.search(reqs)]

    a, b = SimulatedEngine(Echo(), seed=3), SimulatedEngine(Echo(), seed=3)
    check_engine(a, SearchRequest(query="q", k=1, question="q?", golden_answers=["A"], noise_prob=0.5), "training")
    assert draws(a) == draws(b)


def test_engine_counters_are_per_step_deltas_of_the_numeric_stats():
    e = Scripted([doc("a")])
    counters = EngineCounters(e)
    e.search([REQ, REQ])
    e.search([REQ])
    assert counters.delta() == {"engine/requests": 2, "engine/leak_flagged": 4}
    assert counters.delta() == {"engine/requests": 0, "engine/leak_flagged": 0}
    assert counter_note({"engine/leak_flagged": 4, "engine/fallbacks": 0}) == "leak_flagged 4"
