"""REINFORCE++ (Hu 2025) and the plain outcome REINFORCE that the reference ZeroSearch code runs.

REINFORCE++, the whole objective (no critic; the batch-wide whitening is the baseline):
    r_t      = -beta * KL_k1(pi_old || pi_ref)_t  (+ the outcome score at the last policy token)
    G_t      = sum_{s >= t} gamma^(s - t) r_s     s, t counting policy tokens only (retrieved ones skipped)
    A_t      = (G_t - mean(G)) / std(G)           mean/std over every policy token of the batch
    L_actor  = agg( -min(rho_t A_t, clip(rho_t, 1-eps_c, 1+eps_c) A_t) ) - entropy_coef * agg( H_t )

Plain REINFORCE (`Reinforce`; the paper calls it REINFORCE++, the code does this):
    A_t      = r                                  the outcome score on every policy token; no baseline
    L_actor  = agg( clipped surrogate ) + beta * agg( KL_k3(pi || pi_ref)_t ) - entropy_coef * agg( H_t )
               (the same KL loss as GRPO, ADDED; the reference code subtracts it)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from zerosearch.algorithms.advantages import reinforce_advantages, reinforce_pp_advantages
from zerosearch.algorithms.batch import RolloutBatch
from zerosearch.algorithms.kl import KLKind
from zerosearch.algorithms.losses import AggMode, actor_loss


@dataclass(frozen=True)
class ReinforcePP:
    clip_eps: float = 0.2
    clip_eps_high: float | None = None  # None = symmetric clip
    entropy_coef: float = 0.001
    kl_coef: float = 0.001  # beta of the KL in the reward; 0 disables it (and the reference model)
    kl_kind: KLKind = "k1"
    gamma: float = 1.0
    loss_agg: AggMode = "token-mean"

    name: ClassVar[str] = "reinforce_pp"
    uses_critic: ClassVar[bool] = False

    @property
    def needs_ref(self) -> bool:
        return self.kl_coef != 0

    @torch.no_grad()
    def compute_advantages(self, batch: RolloutBatch) -> tuple[Tensor, Tensor]:
        ref = batch.need("ref_logp") if self.needs_ref else batch.old_logp  # beta = 0: the KL term is 0
        return reinforce_pp_advantages(
            batch.scores, batch.mask, batch.old_logp, ref, self.kl_coef, self.gamma, self.kl_kind
        )

    def actor_loss(
        self, batch: RolloutBatch, new_logp: Tensor, entropy: Tensor | None
    ) -> tuple[Tensor, dict[str, Tensor]]:
        return actor_loss(
            batch, new_logp, entropy, clip_eps=self.clip_eps, clip_eps_high=self.clip_eps_high,
            agg=self.loss_agg, entropy_coef=self.entropy_coef,
        )


@dataclass(frozen=True)
class Reinforce:
    clip_eps: float = 0.2
    clip_eps_high: float | None = None  # None = symmetric clip
    entropy_coef: float = 0.001
    kl_loss_coef: float = 0.001  # beta; 0 disables the KL term (and the reference model)
    kl_loss_kind: KLKind = "k3"
    loss_agg: AggMode = "token-mean"

    name: ClassVar[str] = "reinforce"
    uses_critic: ClassVar[bool] = False

    @property
    def needs_ref(self) -> bool:
        return self.kl_loss_coef != 0

    @torch.no_grad()
    def compute_advantages(self, batch: RolloutBatch) -> tuple[Tensor, None]:
        return reinforce_advantages(batch.scores, batch.mask), None

    def actor_loss(
        self, batch: RolloutBatch, new_logp: Tensor, entropy: Tensor | None
    ) -> tuple[Tensor, dict[str, Tensor]]:
        return actor_loss(
            batch, new_logp, entropy, clip_eps=self.clip_eps, clip_eps_high=self.clip_eps_high,
            agg=self.loss_agg, entropy_coef=self.entropy_coef,
            kl_loss_coef=self.kl_loss_coef, kl_kind=self.kl_loss_kind,
        )
