"""PPO (Schulman et al. 2017) with a learned critic and the KL folded into the reward. The whole objective:

    r_t      = -beta * KL_k1(pi_old || pi_ref)_t  (+ the outcome score at the last policy token)
    A_t, R_t = GAE(gamma, lam) over the policy tokens only; the value bootstraps across a retrieved
               <information> block (advantages.gae explains why); A whitened over the batch
    rho_t    = pi(y_t) / pi_old(y_t)
    L_actor  = agg( -min(rho_t A_t, clip(rho_t, 1-eps_c, 1+eps_c) A_t) ) - entropy_coef * agg( H_t )
    L_critic = agg( 0.5 * max((V_t - R_t)^2, (V_old,t + clip(V_t - V_old,t, -c, c) - R_t)^2) )
The critic is trained on the same mask as the actor: its values on retrieved tokens are never used, so
there is no target for them. Defaults: the bundled trainer config (method.md section 6).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from zerosearch.algorithms.advantages import gae, kl_shaped_token_rewards, masked_whiten
from zerosearch.algorithms.batch import RolloutBatch
from zerosearch.algorithms.kl import KLKind
from zerosearch.algorithms.losses import AggMode, actor_loss, value_loss


@dataclass(frozen=True)
class PPO:
    clip_eps: float = 0.2
    clip_eps_high: float | None = None  # None = symmetric clip
    entropy_coef: float = 0.001
    kl_coef: float = 0.001  # beta of the KL in the reward; 0 disables it (and the reference model)
    kl_kind: KLKind = "k1"
    gamma: float = 1.0
    lam: float = 1.0
    value_clip: float = 0.5
    whiten_advantages: bool = True
    loss_agg: AggMode = "token-mean"

    name: ClassVar[str] = "ppo"
    uses_critic: ClassVar[bool] = True

    @property
    def needs_ref(self) -> bool:
        return self.kl_coef != 0

    @torch.no_grad()
    def compute_advantages(self, batch: RolloutBatch) -> tuple[Tensor, Tensor]:
        ref = batch.need("ref_logp") if self.needs_ref else batch.old_logp  # beta = 0: the KL term is 0
        rewards = kl_shaped_token_rewards(
            batch.scores, batch.mask, batch.old_logp, ref, self.kl_coef, self.kl_kind
        )
        adv, returns = gae(rewards, batch.need("values"), batch.mask, self.gamma, self.lam)
        if self.whiten_advantages:
            adv = masked_whiten(adv, batch.mask)
        return adv, returns

    def actor_loss(
        self, batch: RolloutBatch, new_logp: Tensor, entropy: Tensor | None
    ) -> tuple[Tensor, dict[str, Tensor]]:
        return actor_loss(
            batch, new_logp, entropy, clip_eps=self.clip_eps, clip_eps_high=self.clip_eps_high,
            agg=self.loss_agg, entropy_coef=self.entropy_coef,
        )

    def critic_loss(self, batch: RolloutBatch, new_values: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        # The same loss mask as the actor (see module doc).
        old_values, returns = batch.need("values"), batch.need("returns")
        loss, stats = value_loss(new_values, old_values, returns, batch.mask, self.value_clip, self.loss_agg)
        stats["vf_loss"] = loss.detach()
        return loss, stats
