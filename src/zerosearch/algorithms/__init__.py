"""RL algorithms for search agents: GRPO, PPO, REINFORCE++ and plain REINFORCE, as pure tensor functions.

    algo = algorithms.get("grpo", kl_loss_coef=0.001)        # a frozen dataclass of hyper-parameters
    adv, returns = algo.compute_advantages(batch)             # batch: RolloutBatch, [B, T] response tensors
    batch = dataclasses.replace(batch, advantages=adv, returns=returns)
    loss, stats = algo.actor_loss(mb, new_logp, entropy)      # per mini-batch mb = batch.select(idx)
    loss, stats = algo.critic_loss(mb, new_values)            # PPO only (algo.uses_critic)

Where is the loss mask applied? `losses.agg_loss`: every per-token term is aggregated over `batch.mask`
(the info mask, 0 on retrieved `<information>` tokens), and every advantage is 0 there.
Files: kl.py (KL estimators), advantages.py (estimators), losses.py (loss terms), one file per algorithm
with its whole objective in the module docstring: grpo.py, ppo.py, reinforce_pp.py.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar, Protocol

from torch import Tensor

from zerosearch.algorithms.batch import RolloutBatch
from zerosearch.algorithms.grpo import GRPO
from zerosearch.algorithms.ppo import PPO
from zerosearch.algorithms.reinforce_pp import Reinforce, ReinforcePP


class Algorithm(Protocol):
    name: ClassVar[str]
    uses_critic: ClassVar[bool]  # True: also call critic_loss, and fill batch.values at rollout

    @property
    def needs_ref(self) -> bool: ...  # True: fill batch.ref_logp (a reference-model forward pass)

    def compute_advantages(self, batch: RolloutBatch) -> tuple[Tensor, Tensor | None]: ...

    def actor_loss(
        self, batch: RolloutBatch, new_logp: Tensor, entropy: Tensor | None
    ) -> tuple[Tensor, dict[str, Tensor]]: ...


ALGORITHMS: dict[str, type] = {cls.name: cls for cls in (GRPO, PPO, ReinforcePP, Reinforce)}


def get(name: str, **hparams: Any) -> Algorithm:
    """Algorithm `name` ("grpo", "ppo", "reinforce_pp", "reinforce"), its defaults overridden by `hparams`."""
    try:
        cls = ALGORITHMS[name]
    except KeyError:
        raise ValueError(f"unknown algorithm {name!r}; choose one of {sorted(ALGORITHMS)}") from None
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(str(k) for k in hparams if k not in known)
    if unknown:
        raise ValueError(f"{name}: unknown hyper-parameter(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    return cls(**hparams)


__all__ = ["ALGORITHMS", "GRPO", "PPO", "Algorithm", "Reinforce", "ReinforcePP", "RolloutBatch", "get"]
