"""Per-token KL estimators between the policy and the frozen reference, on log-probs of *sampled* tokens.

With samples y ~ pi and log-ratio d = log pi(y) - log pi_ref(y), each estimates KL(pi || pi_ref):

    k1  = d                              unbiased, high variance, can be negative (used *in the reward*)
    k2  = 0.5 * d^2                      biased, low variance, always >= 0
    k3  = exp(-d) - (-d) - 1             unbiased, low variance, always >= 0 (Schulman, "Approximating
                                         KL divergence"; veRL's "low_var_kl"; used *as a loss* by GRPO)
    abs = |d|

k3 is clamped as veRL's `kl_penalty(..., "low_var_kl")` does (verl/trainer/ppo/core_algos.py): the
log-ratio to [-20, 20] before exponentiating (one token with near-zero probability under the reference
would otherwise overflow to inf and NaN the whole loss), then the k3 *value* to [-10, 10] (k3 >= 0, so
at most 10). The second clamp is what bounds a runaway token: k3 reaches 10 at -d ~ 2.53 (the policy
12.5x *less* likely than the reference) or -d ~ -11 (60,000x *more* likely), and beyond that the term is
constant, so its gradient is 0 instead of growing like exp(-d). Inside the clamps value and gradient are
exact.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

KLKind = Literal["k1", "k2", "k3", "abs"]
KL_KINDS: tuple[str, ...] = ("k1", "k2", "k3", "abs")
_LOG_RATIO_CLAMP = 20.0  # veRL: kl = torch.clamp(ref_logprob - logprob, min=-20, max=20)
_K3_CLAMP = 10.0  # veRL: torch.clamp(kld, min=-10, max=10)


def kl_penalty(logp: Tensor, ref_logp: Tensor, kind: KLKind = "k1") -> Tensor:
    """Elementwise KL estimate, same shape as `logp` (no masking: aggregate with the loss mask)."""
    d = logp - ref_logp
    if kind == "k1":
        return d
    if kind == "k2":
        return 0.5 * d.square()
    if kind == "k3":
        neg_d = (-d).clamp(-_LOG_RATIO_CLAMP, _LOG_RATIO_CLAMP)  # log(pi_ref / pi), clamped (see module doc)
        return (torch.exp(neg_d) - neg_d - 1.0).clamp(-_K3_CLAMP, _K3_CLAMP)
    if kind == "abs":
        return d.abs()
    raise ValueError(f"unknown KL estimator {kind!r}; choose one of {KL_KINDS}")
