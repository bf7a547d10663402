"""GRPO (Shao et al. 2024, DeepSeekMath), as ZeroSearch trains it. The whole objective:

    A_i      = (r_i - mean_g(r)) / (std_g(r) + eps)          for every policy token of trajectory i,
                                                              g = the n samples of i's question
    rho_t    = pi(y_t) / pi_old(y_t)
    L_actor  = agg( -min(rho_t A_t, clip(rho_t, 1-eps_c, 1+eps_c) A_t) )
             + beta * agg( KL_k3(pi || pi_ref)_t )            (ADDED; the reference code subtracts it)
             - entropy_coef * agg( H_t )
No critic, no KL in the reward. Defaults: the paper's public GRPO script (method.md section 6).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from zerosearch.algorithms.advantages import grpo_advantages
from zerosearch.algorithms.batch import RolloutBatch
from zerosearch.algorithms.kl import KLKind
from zerosearch.algorithms.losses import AggMode, actor_loss


@dataclass(frozen=True)
class GRPO:
    clip_eps: float = 0.2
    clip_eps_high: float | None = None  # None = symmetric clip
    entropy_coef: float = 0.001
    kl_loss_coef: float = 0.001  # beta; 0 disables the KL term (and the reference model)
    kl_loss_kind: KLKind = "k3"
    adv_eps: float = 1e-6
    norm_adv_by_std: bool = True  # False: Dr. GRPO-style r - mean
    loss_agg: AggMode = "token-mean"

    name: ClassVar[str] = "grpo"
    uses_critic: ClassVar[bool] = False

    @property
    def needs_ref(self) -> bool:
        return self.kl_loss_coef != 0

    @torch.no_grad()
    def compute_advantages(self, batch: RolloutBatch) -> tuple[Tensor, None]:
        if batch.group_ids is None:
            raise ValueError("GRPO needs batch.group_ids (one unique id per question)")
        adv = grpo_advantages(batch.scores, batch.group_ids, batch.mask, self.adv_eps, self.norm_adv_by_std)
        return adv, None

    def actor_loss(
        self, batch: RolloutBatch, new_logp: Tensor, entropy: Tensor | None
    ) -> tuple[Tensor, dict[str, Tensor]]:
        return actor_loss(
            batch, new_logp, entropy, clip_eps=self.clip_eps, clip_eps_high=self.clip_eps_high,
            agg=self.loss_agg, entropy_coef=self.entropy_coef,
            kl_loss_coef=self.kl_loss_coef, kl_kind=self.kl_loss_kind,
        )
