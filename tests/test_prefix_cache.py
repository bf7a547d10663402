"""KV reuse across turns (zerosearch.agent.prefix_cache) changes no sample: the same tokens and log-probs as a
fresh prefill, greedy and sampled, across micro-batches, a GRPO group's shared prompt and a weight update;
and it really feeds fewer tokens. The model runs in float64 so that the two paths' different float
reduction orders cannot flip a near-tie and the comparison can be exact."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from zerosearch.data.qa import QARecord
from zerosearch.agent.generation import HFBackend
from zerosearch.agent.prefix_cache import PrefixCache, common_prefix, unsupported
from zerosearch.agent.rollout import RolloutConfig, rollout
from test_packing import QUESTIONS, Docs


@pytest.fixture(scope="module")
def tiny64() -> tuple[Any, Any]:
    from zerosearch.models import load

    model, tok = load("tiny-random", seed=0)
    return model.double().eval(), tok


def test_common_prefix_and_lookup_by_hand() -> None:
    assert common_prefix((1, 2, 3), [1, 2, 4, 5]) == 2 and common_prefix((1, 2), [1, 2, 3]) == 2
    assert common_prefix((), [1]) == 0 and common_prefix((7,), [1]) == 0
    cache = PrefixCache(torch.nn.Linear(1, 1), max_tokens=10)
    kv_a, kv_b = [("a", "a")], [("b", "b")]
    cache.put((1, 2, 3), kv_a)
    cache.put((1, 2, 9, 9), kv_b)
    assert cache.lookup([1, 2, 3, 4]) == (3, kv_a)  # the longest agreement wins
    assert cache.lookup([1, 2, 3]) == (2, kv_a)  # one token is always left to feed
    assert cache.lookup([1, 2, 9, 9, 5]) == (4, kv_b)
    assert cache.lookup([5, 1, 2]) == (0, None)
    cache.put((4, 4, 4, 4), [("c", "c")])  # 11 tokens > 10: the least recently used entry goes
    assert (1, 2, 3) not in cache.entries and cache.tokens == 8


def test_weight_update_empties_the_cache() -> None:
    lin = torch.nn.Linear(2, 2)
    cache = PrefixCache(lin, max_tokens=100)
    cache.put((1, 2), [("k", "v")])
    cache.check_weights()
    assert cache.entries  # nothing moved
    with torch.no_grad():
        lin.weight.add_(1.0)  # what optimizer.step does: in place
    cache.check_weights()
    assert not cache.entries and cache.tokens == 0


def two_turns(backend: HFBackend, tok: Any, temperature: float) -> list[list[Any]]:
    """A turn, then each row's prompt + part of what it wrote + an inserted block, as the rollout does."""
    p = [tok(q, add_special_tokens=False).input_ids for q in QUESTIONS]
    prompts = [p[0], p[1], p[0], p[2], p[0], p[1]]  # repeated prompts: GRPO groups
    first = backend.generate(prompts, 9, temperature=temperature, seed=3)
    block = tok(" <information>about it</information>", add_special_tokens=False).input_ids
    nxt = [q + o.token_ids[: 3 + i % 4] + block for i, (q, o) in enumerate(zip(prompts, first))]
    second = backend.generate(nxt, 9, temperature=temperature, seed=4)
    return [[(o.token_ids, o.logprobs, o.stopped_by) for o in first], [(o.token_ids, o.logprobs, o.stopped_by)
                                                                          for o in second]]


@pytest.mark.parametrize("temperature", [0.0, 1.0])
@pytest.mark.parametrize("batch_size", [1, 4])
def test_same_samples_as_a_fresh_prefill_with_fewer_tokens_fed(tiny64, temperature, batch_size) -> None:
    model, tok = tiny64
    plain = two_turns(HFBackend(model, tok, batch_size=batch_size, logprobs=True), tok, temperature)
    reuse = HFBackend(model, tok, batch_size=batch_size, logprobs=True, kv_cache_tokens=4096)
    assert two_turns(reuse, tok, temperature) == plain
    prompt_tokens = reuse.prefix.reused + reuse.prefix.fed
    assert reuse.prefix.reused > prompt_tokens / 3  # turn 2 reuses turn 1; the groups share a prefill


def test_a_weight_update_between_calls_is_never_served_stale(tiny64) -> None:
    model, tok = tiny64
    model = type(model)(model.config).double().eval()
    model.load_state_dict(tiny64[0].state_dict())
    reuse = HFBackend(model, tok, batch_size=4, logprobs=True, kv_cache_tokens=4096)
    two_turns(reuse, tok, 0.0)
    assert reuse.prefix.entries
    opt = torch.optim.AdamW(model.parameters(), lr=0.05)  # a real optimizer step, as the trainer's
    model(torch.tensor([[5, 6, 7]])).logits.sum().backward()
    opt.step()
    assert two_turns(reuse, tok, 0.0) == two_turns(HFBackend(model, tok, batch_size=4, logprobs=True), tok, 0.0)


def test_a_tight_budget_evicts_but_never_changes_a_sample(tiny64) -> None:
    model, tok = tiny64
    tight = HFBackend(model, tok, batch_size=4, logprobs=True, kv_cache_tokens=40)
    assert two_turns(tight, tok, 1.0) == two_turns(HFBackend(model, tok, batch_size=4, logprobs=True), tok, 1.0)
    assert tight.prefix.tokens <= 40 or len(tight.prefix.entries) == 1


def test_entries_nobody_continues_are_dropped_after_two_calls(tiny64) -> None:
    """A finished row's entry survives one unrelated call (a `self` engine's documents between two policy
    turns) and is gone after the next, so an evaluation's memory does not grow with its questions."""
    model, tok = tiny64
    b = HFBackend(model, tok, batch_size=4, kv_cache_tokens=100_000)
    p = tok(QUESTIONS[1], add_special_tokens=False).input_ids
    first = b.generate([p], 5, temperature=0.0)
    key = next(iter(b.prefix.entries))
    assert key[: len(p)] == tuple(p)
    other = tok("Unrelated text", add_special_tokens=False).input_ids
    b.generate([other], 3, temperature=0.0)
    assert key in b.prefix.entries  # one call in between: still there for the row's next turn
    b.generate([other + [5]], 3, temperature=0.0)
    assert key not in b.prefix.entries and b.prefix.tokens == sum(len(k) for k in b.prefix.entries)
    assert first  # (the row's output itself is checked by the tests above)


def test_models_whose_positions_follow_the_cache_index_are_refused(tiny64) -> None:
    model, tok = tiny64
    assert unsupported(model) is None
    cfg = model.config
    old = getattr(cfg, "layer_types", None)
    cfg.layer_types = ["sliding_attention"] * cfg.num_hidden_layers
    try:
        assert "sliding" in unsupported(model)
        with pytest.raises(ValueError, match="turn optim.reuse_kv_cache off"):
            PrefixCache(model, 100)
        assert HFBackend(model, tok, kv_cache_tokens=100).prefix is None  # off, with a warning
    finally:
        cfg.layer_types = old


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_a_rollout_is_the_same_with_kv_reuse(tiny64, temperature) -> None:
    model, tok = tiny64
    records = [QARecord(id=f"q{i}", question=q, golden_answers=["x"], data_source="nq") for i, q in enumerate(QUESTIONS)]
    cfg = RolloutConfig(max_turns=3, max_new_tokens_per_turn=10, n=3, k=2, temperature=temperature)
    runs = [rollout(records, HFBackend(model, tok, batch_size=4, logprobs=True, kv_cache_tokens=k), tok, Docs(), cfg,
                    seed=5) for k in (0, 8192)]
    for a, b in zip(*runs):
        assert (a.prompt_ids, a.response_ids, a.info_mask, a.sampler_logprobs, a.end) == \
            (b.prompt_ids, b.response_ids, b.info_mask, b.sampler_logprobs, b.end)
    assert sum(t.turns for t in runs[0]) > len(runs[0])  # more than one turn happened: there was something to reuse
