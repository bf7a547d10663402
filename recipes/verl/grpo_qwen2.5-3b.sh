#!/usr/bin/env bash
# GRPO (the paper's public GRPO script): group-normalised advantages, KL as a loss (k3, 0.001), warm-up
# ratio 0.95. UNTESTED ON A GPU HERE. Extra hydra overrides pass through: `... grpo_qwen2.5-3b.sh trainer.nnodes=2`.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
exec "$PYTHON" -m verl.trainer.main_ppo "${COMMON_ARGS[@]}" \
  algorithm.adv_estimator=grpo \
  algorithm.use_kl_in_reward=False \
  actor_rollout_ref.actor.use_kl_loss=True \
  actor_rollout_ref.actor.kl_loss_coef=0.001 \
  actor_rollout_ref.actor.kl_loss_type=low_var_kl \
  actor_rollout_ref.actor.optim.lr_warmup_steps_ratio=0.95 \
  trainer.experiment_name=grpo-qwen2.5-3b \
  "$@"
