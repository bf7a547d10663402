#!/usr/bin/env bash
# PPO (the paper's public PPO script): GAE with gamma = lambda = 1, a critic initialised from the policy
# (lr 1e-5, value clip 0.5), KL in the reward (k1, 0.001), actor warm-up ratio 0.285. UNTESTED ON A GPU HERE.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
exec "$PYTHON" -m verl.trainer.main_ppo "${COMMON_ARGS[@]}" \
  algorithm.adv_estimator=gae \
  algorithm.gamma=1.0 \
  algorithm.lam=1.0 \
  algorithm.use_kl_in_reward=True \
  algorithm.kl_penalty=kl \
  algorithm.kl_ctrl.kl_coef=0.001 \
  actor_rollout_ref.actor.use_kl_loss=False \
  actor_rollout_ref.actor.optim.lr_warmup_steps_ratio=0.285 \
  critic.model.path="$MODEL" \
  critic.model.enable_gradient_checkpointing=True \
  critic.optim.lr=1e-5 \
  critic.cliprange_value=0.5 \
  critic.ppo_micro_batch_size_per_gpu=8 \
  trainer.experiment_name=ppo-qwen2.5-3b \
  "$@"
