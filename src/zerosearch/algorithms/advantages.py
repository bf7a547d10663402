"""Advantage estimators. Pure functions on [B, T] response tensors; `mask` [B, T] is 0/1 (float or bool).

Conventions shared by every function here:
- Outputs are exactly 0 where `mask` is 0 (retrieved `<information>` tokens, padding).
- Masked-out positions are *skipped*, not treated as time steps: in a multi-turn trajectory the
  policy's decisions are the masked-in tokens, and a retrieved block in the middle is part of the
  environment's transition, not an action. So discounting (gamma), GAE's lambda and the value
  bootstrap all run over the sequence of masked-in tokens as if they were consecutive. veRL instead
  runs GAE over every response position and masks afterwards, so a value predicted on a retrieved
  token (never trained on a policy decision) leaks into the advantages of the policy tokens before it.
- Nothing here needs gradients; callers run them under `torch.no_grad()`.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence

import torch
from torch import Tensor

from zerosearch.algorithms.kl import KLKind, kl_penalty


# ---------------------------------------------------------------------------------------------------
# Masked statistics
# ---------------------------------------------------------------------------------------------------
def masked_sum(x: Tensor, mask: Tensor, dim: int | None = None) -> Tensor:
    # torch.where, not x * mask: a NaN/inf in a masked-out slot must not leak into the sum.
    kept = torch.where(mask.bool(), x, torch.zeros_like(x))
    return kept.sum() if dim is None else kept.sum(dim)


def masked_mean(x: Tensor, mask: Tensor, dim: int | None = None) -> Tensor:
    """Mean over entries where mask is 1 (over `dim`, or all); 0 where there are none (no NaN)."""
    count = mask.bool().sum() if dim is None else mask.bool().sum(dim)
    return masked_sum(x, mask, dim) / count.clamp_min(1)


def masked_var(x: Tensor, mask: Tensor, unbiased: bool = True) -> Tensor:
    """Variance over all masked-in entries; unbiased (n - 1, like torch.var and veRL) by default; 0 if n<2."""
    n = mask.bool().sum()
    sq = masked_sum((x - masked_mean(x, mask)).square(), mask)
    return sq / ((n - 1) if unbiased else n).clamp_min(1)


def masked_whiten(x: Tensor, mask: Tensor, shift_mean: bool = True, eps: float = 1e-8) -> Tensor:
    """(x - mean) / sqrt(var + eps) with mean and (unbiased) var over the masked-in entries of the whole
    batch; with shift_mean=False the mean is added back (only the scale changes). 0 where mask is 0."""
    mean = masked_mean(x, mask)
    white = (x - mean) * torch.rsqrt(masked_var(x, mask) + eps)
    if not shift_mean:
        white = white + mean
    return torch.where(mask.bool(), white, torch.zeros_like(white))


# ---------------------------------------------------------------------------------------------------
# Token-level rewards
# ---------------------------------------------------------------------------------------------------
def outcome_token_rewards(scores: Tensor, mask: Tensor) -> Tensor:
    """[B, T] zeros with scores[b] at the *last* masked-in token of row b (none if the row is all masked)."""
    m = mask.bool()
    positions = torch.arange(m.shape[1], device=m.device).expand_as(m)
    last = torch.where(m, positions, -1).max(dim=1).values  # [B]; -1 = no policy token in the row
    placed = torch.where(last >= 0, scores, torch.zeros_like(scores))  # an all-masked row gets nothing
    rewards = torch.zeros(m.shape, dtype=scores.dtype, device=scores.device)
    return rewards.scatter(1, last.clamp_min(0)[:, None], placed[:, None])


def kl_shaped_token_rewards(
    scores: Tensor, mask: Tensor, logp: Tensor, ref_logp: Tensor, beta: float, kind: KLKind = "k1"
) -> Tensor:
    """r_t = -beta * KL_t at every masked-in token, + the outcome score at the last masked-in token.
    `logp` are the rollout (old) log-probs: the KL enters the reward, not the gradient."""
    kl = torch.where(mask.bool(), kl_penalty(logp, ref_logp, kind), torch.zeros_like(logp))
    return -beta * kl + outcome_token_rewards(scores, mask)


# ---------------------------------------------------------------------------------------------------
# Estimators
# ---------------------------------------------------------------------------------------------------
def _broadcast(per_row: Tensor, mask: Tensor) -> Tensor:
    """[B] -> [B, T]: the row's value at each masked-in token, 0 elsewhere."""
    full = per_row[:, None].expand(mask.shape)
    return torch.where(mask.bool(), full, torch.zeros_like(full))


def reinforce_advantages(scores: Tensor, mask: Tensor) -> Tensor:
    """Plain outcome REINFORCE (what the reference ZeroSearch code runs): A_t = r for every masked-in
    token; no baseline, no discount, no whitening."""
    return _broadcast(scores, mask)


def grpo_advantages(
    scores: Tensor,
    group_ids: Sequence[Hashable],
    mask: Tensor,
    eps: float = 1e-6,
    norm_by_std: bool = True,
) -> Tensor:
    """GRPO: A_i = (r_i - mean_g) / (std_g + eps) for row i of group g, broadcast over its masked-in tokens.

    - Groups are the rows sharing a `group_ids` value: give each *question* a unique id (e.g. its
      dataset name + row id, or a uuid). A per-dataset row index, as in the reference code, merges
      questions of different datasets that share an index.
    - std_g is the unbiased sample std (n - 1, torch.std's default, as in veRL).
    - A group of size 1 has no comparison, so its advantage is 0 (veRL instead uses mean 0, std 1,
      i.e. the raw score, which mixes an absolute reward into a relative estimator).
    - norm_by_std=False gives the Dr. GRPO-style A_i = r_i - mean_g.
    """
    if isinstance(group_ids, Tensor):  # 0-d tensors hash by identity: compare their values instead
        group_ids = group_ids.tolist()
    if len(group_ids) != scores.numel():
        raise ValueError(f"{len(group_ids)} group ids for {scores.numel()} scores")
    index: dict[Hashable, int] = {}
    gid = torch.tensor([index.setdefault(g, len(index)) for g in group_ids], device=scores.device)
    r = scores if scores.is_floating_point() else scores.float()
    n_groups = len(index)
    count = torch.zeros(n_groups, dtype=r.dtype, device=r.device).index_add_(0, gid, torch.ones_like(r))
    mean = torch.zeros_like(count).index_add_(0, gid, r) / count
    centered = r - mean[gid]
    if norm_by_std:
        sq = torch.zeros_like(count).index_add_(0, gid, centered.square())
        std = (sq / (count - 1).clamp_min(1)).sqrt()
        centered = centered / (std[gid] + eps)
    adv = torch.where(count[gid] > 1, centered, torch.zeros_like(centered))  # singleton groups -> 0
    return _broadcast(adv, mask)


def discounted_returns(token_rewards: Tensor, mask: Tensor, gamma: float) -> Tensor:
    """G_t = sum_{s >= t} gamma^(k(s) - k(t)) r_s over masked-in tokens, k = rank among masked-in tokens
    (masked-out positions are skipped, see module doc; rewards placed on them are ignored)."""
    m = mask.bool()
    returns = torch.zeros_like(token_rewards)
    running = torch.zeros_like(token_rewards[:, 0])
    for t in reversed(range(token_rewards.shape[1])):
        running = torch.where(m[:, t], token_rewards[:, t] + gamma * running, running)
        returns[:, t] = torch.where(m[:, t], running, torch.zeros_like(running))
    return returns


def reinforce_pp_advantages(
    scores: Tensor,
    mask: Tensor,
    logp: Tensor,
    ref_logp: Tensor,
    beta: float,
    gamma: float = 1.0,
    kl_kind: KLKind = "k1",
) -> tuple[Tensor, Tensor]:
    """REINFORCE++ (Hu 2025): r_t = -beta * KL_t (+ score at the last policy token); G_t = discounted
    return over masked-in tokens; A = G whitened over all masked-in tokens of the batch (the batch-wide
    baseline replaces a critic). Returns (advantages, returns)."""
    rewards = kl_shaped_token_rewards(scores, mask, logp, ref_logp, beta, kl_kind)
    returns = discounted_returns(rewards, mask, gamma)
    return masked_whiten(returns, mask), returns


def gae(
    token_rewards: Tensor, values: Tensor, mask: Tensor, gamma: float, lam: float
) -> tuple[Tensor, Tensor]:
    """Generalised Advantage Estimation over the masked-in tokens only. Returns (advantages, returns).

    With t' = the next masked-in position after t (none after the last one, where V(t') = 0):
        delta_t = r_t + gamma * V(t') - V(t)
        A_t     = delta_t + gamma * lam * A_t'
        R_t     = A_t + V(t)                       (critic target)
    A value on a retrieved token is never used, and the critic is trained on the same mask, so a
    retrieved block between two turns is bridged: the last token before it bootstraps from the value of
    the first policy token after it (see module doc). Rewards on masked-out positions are ignored.
    """
    m = mask.bool()
    advantages = torch.zeros_like(token_rewards)
    next_value = torch.zeros_like(token_rewards[:, 0])
    next_adv = torch.zeros_like(next_value)
    for t in reversed(range(token_rewards.shape[1])):
        delta = token_rewards[:, t] + gamma * next_value - values[:, t]
        adv = delta + gamma * lam * next_adv
        advantages[:, t] = torch.where(m[:, t], adv, torch.zeros_like(adv))
        next_value = torch.where(m[:, t], values[:, t], next_value)  # skip masked-out steps: carry on
        next_adv = torch.where(m[:, t], adv, next_adv)
    returns = torch.where(m, advantages + values, torch.zeros_like(values))
    return advantages, returns
