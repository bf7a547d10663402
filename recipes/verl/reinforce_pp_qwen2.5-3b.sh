#!/usr/bin/env bash
# REINFORCE++ (the estimator the ZeroSearch authors recommend when GRPO collapses): token-level KL penalty
# in the reward (k1, 0.001), discounted return, batch-wide whitening, clipped ratio; warm-up ratio 0.95.
# UNTESTED ON A GPU HERE.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
exec "$PYTHON" -m verl.trainer.main_ppo "${COMMON_ARGS[@]}" \
  algorithm.adv_estimator=reinforce_plus_plus \
  algorithm.gamma=1.0 \
  algorithm.use_kl_in_reward=True \
  algorithm.kl_penalty=kl \
  algorithm.kl_ctrl.kl_coef=0.001 \
  actor_rollout_ref.actor.use_kl_loss=False \
  actor_rollout_ref.actor.optim.lr_warmup_steps_ratio=0.95 \
  trainer.experiment_name=reinforce_pp-qwen2.5-3b \
  "$@"
