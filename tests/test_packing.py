"""The speed paths change no result: the sampler's log-probs equal the trainer's recomputation, length-
sorted trimmed micro-batches and a group's prompt computed once give the same log-probs and the same
update, on the tiny random model."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
import torch

from fakes import logprob_atol
from zerosearch.data.qa import QARecord
from zerosearch.engines.base import Document, SearchEngine, SearchRequest
from zerosearch.agent.generation import HFBackend
from zerosearch.training.packing import length_sorted, logprobs_by_length, prompt_sorted, shared_prompt_logprobs, trim_columns
from zerosearch.agent.rollout import RolloutConfig, collate, compute_logprobs, rollout


@pytest.fixture(scope="module")
def tiny() -> tuple[Any, Any]:
    from zerosearch.models import load

    model, tok = load("tiny-random", seed=0)
    return model.eval(), tok


class Docs(SearchEngine):
    name = "docs"

    def search(self, requests: list[SearchRequest]) -> list[list[Document]]:
        return [[Document(title="t", text=f"about {r.query} " * (1 + i % 3), source="docs") for i in range(r.k)]
                for r in requests]


QUESTIONS = ["Capital of France?", "Who wrote the novel Moby Dick, and in which year was it published?",
             "Largest ocean?"]


def trajectories(tiny: tuple[Any, Any], logprobs: bool, temperature: float = 1.0) -> Any:
    model, tok = tiny
    records = [QARecord(id=f"q{i}", question=q, golden_answers=["x"], data_source="nq") for i, q in enumerate(QUESTIONS)]
    cfg = RolloutConfig(max_turns=2, max_new_tokens_per_turn=10, n=2, k=2, temperature=temperature)
    return rollout(records, HFBackend(model, tok, batch_size=4, logprobs=logprobs), tok, Docs(), cfg, seed=5)


def test_length_sorted_is_longest_first_and_stable() -> None:
    idx = torch.tensor([4, 0, 2, 1, 3])
    lengths = torch.tensor([5, 9, 5, 1, 9])
    assert length_sorted(idx, lengths).tolist() == [4, 1, 0, 2, 3]  # 9, 9 (in idx order), 5, 5, 1


def test_trim_columns_drops_only_columns_that_are_padding_in_every_row() -> None:
    # P = 4 prompt columns (left-padded), R = 3 response columns (right-padded)
    am = torch.tensor([[0, 0, 1, 1, 1, 0, 0],
                       [0, 1, 1, 1, 1, 1, 0]])
    batch = {"input_ids": torch.arange(14).view(2, 7), "attention_mask": am,
             "response_mask": torch.tensor([[1, 0, 0], [1, 1, 0]]), "rewards": torch.tensor([1.0, 0.0])}
    out, r = trim_columns(batch)
    assert r == 2
    assert out["input_ids"].tolist() == [[1, 2, 3, 4, 5], [8, 9, 10, 11, 12]]
    assert out["response_mask"].tolist() == [[1, 0], [1, 1]] and out["rewards"] is batch["rewards"]


@pytest.mark.parametrize("temperature", [1.0, 0.0])
def test_sampler_logprobs_equal_the_trainers_recomputation_and_change_no_token(tiny, temperature) -> None:
    plain, reported = trajectories(tiny, False, temperature), trajectories(tiny, True, temperature)
    assert [t.response_ids for t in plain] == [t.response_ids for t in reported]  # same samples
    assert "sampler_logprobs" not in collate(plain, tiny[1].pad_token_id)
    batch = collate(reported, tiny[1].pad_token_id)
    assert "sampler_logprobs" in batch and 0 < batch["info_mask"].sum() < batch["response_mask"].sum()
    recomputed = compute_logprobs(tiny[0], batch, temperature or 1.0, micro_batch=4).cpu()
    m = batch["info_mask"].bool()
    torch.testing.assert_close(batch["sampler_logprobs"][m], recomputed[m], atol=logprob_atol(2e-4), rtol=0)
    assert (batch["sampler_logprobs"][~m] == 0).all()  # inserted tokens: no sampler log-prob


def test_logprobs_by_length_equals_compute_logprobs(tiny) -> None:
    batch = collate(trajectories(tiny, False), tiny[1].pad_token_id)
    want = compute_logprobs(tiny[0], batch, 0.7, micro_batch=2).cpu()
    got = logprobs_by_length(tiny[0], batch, 0.7, micro_batch=2)
    torch.testing.assert_close(got, want, atol=logprob_atol(1e-5), rtol=0)
    assert (got[batch["response_mask"] == 0] == 0).all()


def test_the_optimised_trainer_step_computes_the_same_update(tmp_path) -> None:
    """Same rollout (same tokens), then _rollout_batch + update with both flags off and on: the same
    old log-probs (to float noise) and the same losses and gradient norm."""
    from test_trainer import DocsEngine, make_cfg
    from zerosearch.training.trainer import Trainer

    results = {}
    variants = {"plain": [], "sorted": ["optim.sort_by_length=true", "optim.reuse_sampler_logprobs=true"],
                "shared prompts": ["optim.share_prompts=true", "optim.reuse_sampler_logprobs=true"],
                "shared, old recomputed": ["optim.share_prompts=true"],
                "loss-token logits": ["optim.loss_token_logits=true"],
                "shared, loss-token logits": ["optim.share_prompts=true", "optim.loss_token_logits=true"]}
    for name, flags in variants.items():
        cfg = make_cfg(tmp_path, "rollout.max_turns=2", "rollout.max_new_tokens_per_turn=12", "rollout.n=3",
                       "optim.mini_batch_size=6", "optim.micro_batch_size=2", *flags)
        trainer = Trainer(cfg, tmp_path / f"run-{name}", progress=False, engine=DocsEngine())
        ro = rollout(trainer.batch_records(1), trainer.backend, trainer.tok, trainer.engine, trainer.rollout_cfg,
                     seed=11)
        batch = collate(ro, trainer.tok.pad_token_id)
        assert ("sampler_logprobs" in batch) == ("optim.reuse_sampler_logprobs=true" in flags)
        rb = trainer._rollout_batch(ro, batch)
        adv, ret = trainer.algo.compute_advantages(rb)
        rb = dataclasses.replace(rb, advantages=adv, returns=ret)
        results[name] = ([t.response_ids for t in ro], rb, trainer.update(batch, rb, 1))
        trainer.close()
    ids0, rb0, up0 = results["plain"]
    m = rb0.mask.bool()
    for name, (ids1, rb1, up1) in results.items():
        assert ids0 == ids1, name
        torch.testing.assert_close(rb1.old_logp[m], rb0.old_logp[m], atol=2e-4, rtol=0, msg=name)
        torch.testing.assert_close(rb1.ref_logp[m], rb0.ref_logp[m], atol=1e-5, rtol=0, msg=name)
        if "loss-token" in name:  # the head ran at the loss mask's tokens only
            assert (rb1.ref_logp[~m] == 0).all() and (rb1.old_logp[~m] == 0).all(), name
        else:
            torch.testing.assert_close(rb1.ref_logp, rb0.ref_logp, atol=1e-5, rtol=0, msg=name)
        for k in up0:
            assert up1[k] == pytest.approx(up0[k], rel=1e-3, abs=1e-5), (name, k)


def test_without_the_loss_mask_the_old_logprobs_are_recomputed(tmp_path) -> None:
    """Inserted tokens have no sampler log-prob: training on them needs the real forward."""
    from test_trainer import DocsEngine, make_cfg
    from zerosearch.training.trainer import Trainer

    cfg = make_cfg(tmp_path, "train.loss_mask=false", "optim.reuse_sampler_logprobs=true", "rollout.max_turns=2",
                   "rollout.max_new_tokens_per_turn=8")
    trainer = Trainer(cfg, tmp_path / "run", progress=False, engine=DocsEngine())
    ro = rollout(trainer.batch_records(1), trainer.backend, trainer.tok, trainer.engine, trainer.rollout_cfg, seed=2)
    batch = collate(ro, trainer.tok.pad_token_id)
    rb = trainer._rollout_batch(ro, batch)
    want = compute_logprobs(trainer.policy, batch, 1.0, 8).cpu()
    torch.testing.assert_close(rb.old_logp, want, atol=1e-5, rtol=0)
    assert (rb.old_logp[(batch["info_mask"] == 0) & (batch["response_mask"] == 1)] != 0).any()
    trainer.close()


def test_prompt_sorted_puts_a_group_together_longest_group_first() -> None:
    # P = 2 prompt columns; rows 0 and 2 share prompt (5, 6), rows 1 and 3 share (7, 8) (row 3 left-padded
    # differently would still be the same prompt: only real tokens count)
    batch = {"input_ids": torch.tensor([[5, 6, 1, 0], [7, 8, 1, 1], [5, 6, 1, 1], [7, 8, 1, 0]]),
             "attention_mask": torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1], [1, 1, 1, 1], [1, 1, 1, 0]]),
             "response_mask": torch.tensor([[1, 0], [1, 1], [1, 1], [1, 0]])}
    # both groups' longest row has 4 tokens: the first seen group first, its longest row first
    assert prompt_sorted(torch.arange(4), batch).tolist() == [2, 0, 1, 3]
    batch["attention_mask"][0, 0] = 0  # row 0's prompt is now (6,), 2 tokens: its own group, shortest last
    assert prompt_sorted(torch.arange(4), batch).tolist() == [1, 3, 2, 0]  # (7, 8) seen before (5, 6)
    assert prompt_sorted(torch.tensor([3, 0]), batch).tolist() == [3, 0]


@pytest.mark.parametrize("by_row", [False, True])
def test_shared_prompt_logprobs_equal_the_plain_forward_with_their_gradients(tiny, by_row) -> None:
    """float64, so any difference beyond rounding is a bug: the same log-probs, entropies and gradients
    as rollout.compute_logprobs, for groups of n = 2 with different response lengths."""
    import copy

    model = copy.deepcopy(tiny[0]).double()
    batch = collate(trajectories(tiny, False), tiny[1].pad_token_id)
    assert len({tuple(r) for r in batch["input_ids"][:, :-batch["response_mask"].shape[1]].tolist()}) < len(batch["rewards"])
    weights = torch.randn(batch["response_mask"].shape, generator=torch.Generator().manual_seed(0),
                          dtype=torch.float64).to(model.device)
    grads, outs = [], []
    for shared in (False, True):
        model.zero_grad(set_to_none=True)
        fn = (lambda m, b, t, **kw: shared_prompt_logprobs(m, b, t, by_row=by_row, **kw)) if shared else \
            (lambda m, b, t, **kw: compute_logprobs(m, b, t, 64, **kw))
        logp, ent = fn(model, batch, 0.7, grad=True, with_entropy=True)
        ((logp * weights).sum() + ent.sum()).backward()
        outs.append((logp.detach().cpu(), ent.detach().cpu()))
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    torch.testing.assert_close(outs[1][0], outs[0][0], atol=1e-10, rtol=0)
    torch.testing.assert_close(outs[1][1], outs[0][1], atol=1e-10, rtol=0)
    assert grads[0].keys() == grads[1].keys() and len(grads[0]) > 5
    for n in grads[0]:
        # Llama's RMSNorm computes in float32 even for a float64 model, so gradients agree to ~1e-8 of
        # their scale (measured), not 1e-15; a wrong KV copy or position would be off by O(1).
        scale = float(grads[0][n].abs().max())
        torch.testing.assert_close(grads[1][n], grads[0][n], atol=1e-6 * scale, rtol=0, msg=n)
    assert (outs[1][0][batch["response_mask"] == 0] == 0).all()
