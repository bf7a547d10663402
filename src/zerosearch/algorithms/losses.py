"""Per-token loss terms and their aggregation. Pure functions on [B, T] response tensors.

WHERE THE LOSS MASK IS APPLIED: `agg_loss`. Every per-token term (policy surrogate, KL, entropy, value
loss) goes through it with `mask` (the info mask: 0 on retrieved `<information>` tokens and padding), and
it drops masked-out entries with `torch.where`, so they get exactly zero gradient and cannot leak a
NaN/inf into the loss.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from zerosearch.algorithms.advantages import masked_mean, masked_sum
from zerosearch.algorithms.batch import RolloutBatch
from zerosearch.algorithms.kl import KLKind, kl_penalty

AggMode = Literal["token-mean", "seq-mean-token-sum", "seq-mean-token-mean"]
AGG_MODES: tuple[str, ...] = ("token-mean", "seq-mean-token-sum", "seq-mean-token-mean")
_LOG_RATIO_CLAMP = 20.0  # exp(20) ~ 5e8: a finite ratio even for a wildly off-policy token


def agg_loss(loss_mat: Tensor, mask: Tensor, mode: AggMode = "token-mean") -> Tensor:
    """Reduce a [B, T] per-token loss to a scalar over the masked-in tokens (the loss mask).

    token-mean          : sum of all masked-in entries / their count (each token weighs the same).
    seq-mean-token-sum  : per row, sum of masked-in entries; mean over the B rows.
    seq-mean-token-mean : per row, mean of masked-in entries; mean over the B rows (each sequence
                          weighs the same).
    A row (or batch) with no masked-in token contributes 0, never NaN; seq modes still divide by B.
    """
    if mode == "token-mean":
        return masked_mean(loss_mat, mask)
    if mode == "seq-mean-token-sum":
        return masked_sum(loss_mat, mask, dim=-1).mean()
    if mode == "seq-mean-token-mean":
        return masked_mean(loss_mat, mask, dim=-1).mean()
    raise ValueError(f"unknown loss aggregation {mode!r}; choose one of {AGG_MODES}")


def policy_loss(
    logp: Tensor,
    old_logp: Tensor,
    advantages: Tensor,
    mask: Tensor,
    clip_eps: float = 0.2,
    clip_eps_high: float | None = None,
    agg: AggMode = "token-mean",
) -> tuple[Tensor, dict[str, Tensor]]:
    """PPO clipped surrogate: L = agg( -min(rho_t A_t, clip(rho_t, 1 - eps, 1 + eps_high) A_t) ),
    rho_t = pi(y_t) / pi_old(y_t). eps_high defaults to eps (set it higher for DAPO's clip-higher).

    Stats: clipfrac (share of tokens where the clipped branch is active, i.e. zero gradient),
    approx_kl = mean k3 estimate of KL(pi_old || pi), ratio_mean; all over the mask, detached.
    """
    eps_high = clip_eps if clip_eps_high is None else clip_eps_high
    log_ratio = (logp - old_logp).clamp(-_LOG_RATIO_CLAMP, _LOG_RATIO_CLAMP)
    ratio = torch.exp(log_ratio)
    unclipped = -advantages * ratio
    clipped = -advantages * ratio.clamp(1.0 - clip_eps, 1.0 + eps_high)
    loss_mat = torch.maximum(unclipped, clipped)  # -min(...) = max of the negatives: the pessimistic bound
    stats = {
        "clipfrac": masked_mean((clipped > unclipped).to(logp.dtype), mask).detach(),
        "approx_kl": masked_mean(kl_penalty(old_logp, logp, "k3"), mask).detach(),
        "ratio_mean": masked_mean(ratio, mask).detach(),
    }
    return agg_loss(loss_mat, mask, agg), stats


def value_loss(
    values: Tensor,
    old_values: Tensor,
    returns: Tensor,
    mask: Tensor,
    clip: float = 0.5,
    agg: AggMode = "token-mean",
) -> tuple[Tensor, dict[str, Tensor]]:
    """Clipped value loss: agg( 0.5 * max((V - R)^2, (V_clip - R)^2) ),
    V_clip = V_old + clip(V - V_old, -clip, +clip). Stats: vf_clipfrac (clipped branch larger), vpred_mean."""
    v_clipped = old_values + (values - old_values).clamp(-clip, clip)
    loss_unclipped = (values - returns).square()
    loss_clipped = (v_clipped - returns).square()
    loss_mat = 0.5 * torch.maximum(loss_unclipped, loss_clipped)
    stats = {
        "vf_clipfrac": masked_mean((loss_clipped > loss_unclipped).to(values.dtype), mask).detach(),
        "vpred_mean": masked_mean(values, mask).detach(),
    }
    return agg_loss(loss_mat, mask, agg), stats


def kl_loss(
    logp: Tensor, ref_logp: Tensor, mask: Tensor, kind: KLKind = "k3", agg: AggMode = "token-mean"
) -> Tensor:
    """Aggregated KL(pi || pi_ref) estimate, to be ADDED to the loss as + beta * kl_loss so that minimising
    pulls the policy toward the reference. (The reference ZeroSearch code subtracts it: a sign bug that
    rewards drifting away; Search-R1 adds it.)"""
    return agg_loss(kl_penalty(logp, ref_logp, kind), mask, agg)


def entropy_from_logits(logits: Tensor) -> Tensor:
    """Per-position entropy H = logsumexp(z) - sum_v softmax(z)_v z_v; [..., V] -> [...].
    Stable for large logits (no log of a probability that underflows to 0)."""
    return torch.logsumexp(logits, dim=-1) - (torch.softmax(logits, dim=-1) * logits).sum(dim=-1)


def entropy_loss(entropy: Tensor, mask: Tensor, agg: AggMode = "token-mean") -> Tensor:
    """The aggregated entropy bonus H; an actor loss *subtracts* entropy_coef * H."""
    return agg_loss(entropy, mask, agg)


def logprobs_from_logits(logits: Tensor, labels: Tensor) -> Tensor:
    """log softmax(logits)[labels]; [..., V], [...] -> [...], without materialising the full log-softmax.

    float32/64: gather the label's logit and subtract logsumexp (one [..., V] temporary inside logsumexp).
    float16/bfloat16: logsumexp over a large vocabulary is imprecise in half precision, so it is computed
    in float32 one row at a time, keeping the extra memory to a single row's [T, V].
    """
    picked = logits.gather(-1, labels.unsqueeze(-1)).squeeze(-1)
    if logits.dtype in (torch.float32, torch.float64):
        return picked - torch.logsumexp(logits, dim=-1)
    lse = torch.stack([torch.logsumexp(row.float(), dim=-1) for row in logits])
    return picked.float() - lse


def actor_loss(
    batch: RolloutBatch,
    new_logp: Tensor,
    entropy: Tensor | None,
    *,
    clip_eps: float,
    clip_eps_high: float | None,
    agg: AggMode,
    entropy_coef: float,
    kl_loss_coef: float = 0.0,
    kl_kind: KLKind = "k3",
) -> tuple[Tensor, dict[str, Tensor]]:
    """The actor objective every algorithm here shares, over batch.mask (THE LOSS MASK):

        L = agg( clipped surrogate ) + kl_loss_coef * agg( KL(pi || pi_ref) ) - entropy_coef * agg( H )

    Algorithms differ in their advantages, and in whether the KL is a loss term (GRPO, REINFORCE:
    kl_loss_coef > 0) or folded into the reward (PPO, REINFORCE++: kl_loss_coef = 0 here).
    """
    mask = batch.mask
    pg, stats = policy_loss(new_logp, batch.old_logp, batch.need("advantages"), mask, clip_eps, clip_eps_high, agg)
    loss = pg
    stats["pg_loss"] = pg.detach()
    if kl_loss_coef != 0:
        kl = kl_loss(new_logp, batch.need("ref_logp"), mask, kl_kind, agg)
        loss = loss + kl_loss_coef * kl  # ADDED: minimising pulls the policy toward the reference
        stats["kl_loss"] = kl.detach()
    if entropy_coef != 0:
        if entropy is None:
            raise ValueError("entropy_coef != 0 needs the per-token entropy")
        ent = entropy_loss(entropy, mask, agg)
        loss = loss - entropy_coef * ent
        stats["entropy"] = ent.detach()
    return loss, stats
