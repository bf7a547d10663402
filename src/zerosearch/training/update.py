"""Step 5 of a training step, the update: ppo_epochs passes of mini-batch optimizer steps over one scored
rollout, each mini-batch's gradient accumulated over micro-batches (and PPO's critic trained alongside).

Its own module because this is where the numbers of a step are made: micro-batch gradients are weighted
so that their sum is the gradient of the *mini-batch's* loss (token- or sequence-mean), whatever the
micro-batch size, the length sorting or the prompt sharing (zerosearch.training.packing) that only change
how the work is cut up. The mini-batch order comes from a generator seeded by the caller, never from the
global RNG, so a resumed run draws the same order.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from typing import Any

import torch
from torch import Tensor

from zerosearch.agent.rollout import compute_logprobs
from zerosearch.algorithms.batch import RolloutBatch
from zerosearch.training.config import OptimSection
from zerosearch.training.packing import length_sorted, prompt_sorted, row_lengths, shared_prompt_logprobs, trim_columns

Amp = Callable[[], AbstractContextManager[Any]]


class ValueModel(torch.nn.Module):
    """PPO's critic: the policy's architecture without the LM head, plus a scalar head. V_t is read at the
    position that predicts response token t (the same alignment as the policy's log-probs)."""

    def __init__(self, causal_lm: Any):
        super().__init__()
        self.backbone = causal_lm.get_decoder()
        self.v_head = torch.nn.Linear(causal_lm.config.hidden_size, 1)
        torch.nn.init.zeros_(self.v_head.weight)  # V = 0 at the start: no arbitrary initial baseline
        torch.nn.init.zeros_(self.v_head.bias)

    def forward(self, batch: dict[str, Tensor]) -> Tensor:
        device = self.v_head.weight.device
        R = batch["response_mask"].shape[1]
        hidden = self.backbone(input_ids=batch["input_ids"].to(device),
                               attention_mask=batch["attention_mask"].to(device),
                               position_ids=batch["position_ids"].to(device)).last_hidden_state[:, -R - 1:-1]
        return self.v_head(hidden).squeeze(-1).float() * batch["response_mask"].to(device)


def rows(batch: dict[str, Tensor], idx: Any) -> dict[str, Tensor]:
    return {k: v[idx] for k, v in batch.items()}


def trim(batch: dict[str, Tensor], rb: RolloutBatch) -> tuple[dict[str, Tensor], RolloutBatch]:
    """Drop the columns that are padding for every row of a micro-batch (less compute, same result)."""
    out, r = trim_columns(batch)
    cut = {f.name: getattr(rb, f.name)[:, :r] for f in dataclasses.fields(rb)
           if isinstance(getattr(rb, f.name), Tensor) and getattr(rb, f.name).dim() == 2}
    return out, dataclasses.replace(rb, **cut)


class MiniBatchUpdate:
    """The update of one training step. Built per step from the trainer's current models (so a test or a
    benchmark that swaps one in is honoured); `__call__` trains and returns the step's loss statistics."""

    def __init__(self, policy: Any, opt: torch.optim.Optimizer, algo: Any, optim: OptimSection, *,
                 temperature: float, critic: torch.nn.Module | None = None,
                 critic_opt: torch.optim.Optimizer | None = None, amp: Amp = nullcontext):
        self.policy, self.opt, self.algo, self.o, self.T = policy, opt, algo, optim, temperature
        self.critic, self.critic_opt, self.amp = critic, critic_opt, amp
        self.want_entropy = getattr(algo, "entropy_coef", 0) != 0
        self.token_mean = getattr(algo, "loss_agg", "token-mean") == "token-mean"

    def __call__(self, batch: dict[str, Tensor], rb: RolloutBatch, seed: int) -> dict[str, float]:
        """ppo_epochs passes of mini-batch updates; each mini-batch accumulates micro-batch gradients
        weighted so the sum equals the mini-batch's own aggregated loss (token- or sequence-mean).
        Leaves the policy in eval mode; the critic stays in train mode (scoring switches it itself)."""
        o = self.o
        B = rb.scores.shape[0]
        gen = torch.Generator().manual_seed(seed)
        sums: dict[str, float] = {}
        counts: dict[str, int] = {}
        self.policy.train()
        if self.critic is not None:
            self.critic.train()
        for _ in range(o.ppo_epochs):
            perm = torch.randperm(B, generator=gen)
            for s in range(0, B, o.mini_batch_size):
                mini = self._order(perm[s: s + o.mini_batch_size], batch)
                denom = self._size(rb.mask, mini)
                for m in range(0, len(mini), o.micro_batch_size):
                    idx = mini[m: m + o.micro_batch_size]
                    weight = self._size(rb.mask, idx) / max(denom, 1.0)
                    for k, v in self._backward(*trim(rows(batch, idx), rb.select(idx)), weight).items():
                        sums[k] = sums.get(k, 0.0) + float(v) * weight
                        counts[k] = counts.get(k, 0) + 1
                sums["grad_norm"] = sums.get("grad_norm", 0.0) + self._optimizer_step()
                counts["grad_norm"] = counts.get("grad_norm", 0) + 1
        self.policy.eval()
        n_mini = o.ppo_epochs * -(-B // o.mini_batch_size)
        # Micro-batch stats were weighted to sum to the mini-batch value; average those over mini-batches.
        out = {k: v / n_mini for k, v in sums.items() if k != "grad_norm"}
        out["grad_norm"] = sums.get("grad_norm", 0.0) / max(counts.get("grad_norm", 1), 1)
        return out

    def _order(self, mini: Tensor, batch: dict[str, Tensor]) -> Tensor:
        """The mini-batch's rows in micro-batch order; a reordering leaves the mini-batch's loss unchanged."""
        if self.o.share_prompts:  # whole groups per micro-batch
            return prompt_sorted(mini, batch)
        if self.o.sort_by_length:  # similar lengths per micro-batch
            return length_sorted(mini, row_lengths(batch))
        return mini

    def _size(self, mask: Tensor, idx: Tensor) -> float:
        """What the loss of rows `idx` is averaged over: their trained tokens (token-mean) or the rows."""
        return float(mask[idx].sum()) if self.token_mean else float(len(idx))

    def _backward(self, sub: dict[str, Tensor], sub_rb: RolloutBatch, weight: float) -> dict[str, Any]:
        """One micro-batch's weighted actor (and critic) loss, backpropagated; returns its statistics."""
        o = self.o
        keep = sub_rb.mask if o.loss_token_logits else None
        with self.amp():  # the forward only: backward replays each op in its forward dtype
            out = shared_prompt_logprobs(self.policy, sub, self.T, grad=True, with_entropy=self.want_entropy,
                                         keep=keep) if o.share_prompts else \
                compute_logprobs(self.policy, sub, self.T, sub["input_ids"].shape[0], grad=True,
                                 with_entropy=self.want_entropy, keep=keep)
        logp, ent = out if self.want_entropy else (out, None)
        loss, st = self.algo.actor_loss(sub_rb, logp.cpu(), None if ent is None else ent.cpu())
        (loss * weight).backward()
        if self.critic is not None:
            with self.amp():
                v = self.critic(sub).cpu()
            vloss, vst = self.algo.critic_loss(sub_rb, v)
            (vloss * weight).backward()
            st = {**st, **vst}
        return st

    def _optimizer_step(self) -> float:
        """Clip, step and clear the policy's (then the critic's) gradients; the policy's pre-clip norm."""
        gn = torch.nn.utils.clip_grad_norm_([p for p in self.policy.parameters() if p.requires_grad], self.o.grad_clip)
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        if self.critic is not None and self.critic_opt is not None:
            torch.nn.utils.clip_grad_norm_(self.critic.parameters(), self.o.grad_clip)
            self.critic_opt.step()
            self.critic_opt.zero_grad(set_to_none=True)
        return float(gn)
