"""The LM head at the loss mask's tokens only (zerosearch.agent.head) computes what the full forward computes
there: the same log-probs, entropies and gradients (float64, so anything beyond rounding is a bug), 0
elsewhere; and models whose logits are not a plain head of the hidden state keep the full forward."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import torch

from test_packing import trajectories
from zerosearch.agent.head import split_head
from zerosearch.training.packing import shared_prompt_logprobs
from zerosearch.agent.rollout import collate, compute_logprobs


@pytest.fixture(scope="module")
def tiny() -> tuple[Any, Any]:
    from zerosearch.models import load

    model, tok = load("tiny-random", seed=0)
    return model.eval(), tok


def _fn(shared: str) -> Any:
    if shared == "plain":
        return lambda m, b, t, **kw: compute_logprobs(m, b, t, 64, **kw)
    return lambda m, b, t, **kw: shared_prompt_logprobs(m, b, t, by_row=shared == "shared, by row", **kw)


@pytest.mark.parametrize("shared", ["plain", "shared, batched", "shared, by row"])
def test_loss_token_head_equals_the_full_forward_at_the_kept_tokens(tiny, shared) -> None:
    """Same log-probs, entropies and gradients as the full head, for the plain and the shared-prompt
    forward; the loss sees the kept tokens only, as the trainer's does."""
    model = copy.deepcopy(tiny[0]).double()
    assert split_head(model) is not None  # tiny-random is a Llama: the sparse head is what is tested
    batch = collate(trajectories(tiny, False), tiny[1].pad_token_id)
    keep = batch["info_mask"]
    assert 0 < int(keep.sum()) < int(batch["response_mask"].sum())  # some response tokens are dropped
    weights = torch.randn(keep.shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * keep
    outs, grads = [], []
    for k in (None, keep):
        model.zero_grad(set_to_none=True)
        logp, ent = _fn(shared)(model, batch, 0.7, grad=True, with_entropy=True, keep=k)
        ((logp * weights).sum() + (ent * keep).sum()).backward()
        outs.append((logp.detach(), ent.detach()))
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    m = keep.bool()
    (full_lp, full_ent), (lp, ent) = outs
    # logits are cast to float32 in both paths, after a float64 head on all rows or on the kept rows
    torch.testing.assert_close(lp[m], full_lp[m], atol=1e-6, rtol=0)
    torch.testing.assert_close(ent[m], full_ent[m], atol=1e-6, rtol=0)
    assert (lp[~m] == 0).all() and (ent[~m] == 0).all()
    assert grads[0].keys() == grads[1].keys() and len(grads[0]) > 5
    for n in grads[0]:
        scale = float(grads[0][n].abs().max())
        torch.testing.assert_close(grads[1][n], grads[0][n], atol=1e-6 * scale, rtol=0, msg=n)


def test_a_model_without_a_plain_head_keeps_the_full_forward_masked_alike(tiny) -> None:
    model = copy.deepcopy(tiny[0])
    model.config.final_logit_softcapping = 30.0  # as Gemma 2 would: logits are no longer head(h)
    assert split_head(model) is None
    batch = collate(trajectories(tiny, False), tiny[1].pad_token_id)
    keep = batch["info_mask"]
    got = compute_logprobs(model, batch, 1.0, 8, keep=keep)
    want = compute_logprobs(model, batch, 1.0, 8) * keep
    torch.testing.assert_close(got, want, atol=0, rtol=0)


def test_a_lora_policy_and_its_disabled_adapter_reference_get_the_same_log_probs(tiny) -> None:
    """Through a PEFT wrapper the decoder is the adapted one, and `disable_adapter()` (the trainer's LoRA
    reference) still switches it off."""
    import contextlib

    from peft import LoraConfig, get_peft_model

    model = get_peft_model(copy.deepcopy(tiny[0]), LoraConfig(r=4, target_modules=["q_proj", "v_proj"],
                                                              init_lora_weights=False)).double()
    assert split_head(model) is not None
    batch = collate(trajectories(tiny, False), tiny[1].pad_token_id)
    keep = batch["info_mask"]
    got = {}
    for name, ctx in (("on", contextlib.nullcontext), ("off", model.disable_adapter)):
        with ctx():
            want = compute_logprobs(model, batch, 1.0, 64) * keep
            got[name] = compute_logprobs(model, batch, 1.0, 64, keep=keep)
            torch.testing.assert_close(got[name], want, atol=1e-6, rtol=0, msg=name)
            torch.testing.assert_close(shared_prompt_logprobs(model, batch, 1.0, keep=keep), want, atol=1e-6, rtol=0)
    assert float((got["on"] - got["off"]).abs().max()) > 1e-4  # the adapter matters, so "off" was tested
