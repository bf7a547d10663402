# Shared by the three recipes: Qwen2.5-3B, the paper's sizes (64 questions x 5 samples per step, 203 steps),
# zerosearch_agent on veRL's vLLM or SGLang rollout, zerosearch's F1 reward. UNTESTED ON A GPU HERE: only
# the composition runs in tests/integrations/test_verl.py (the overrides these scripts pass, composed by
# hydra against veRL's own ppo_trainer config; no training).
#
# Environment: MODEL (policy; Qwen/Qwen2.5-3B base or -Instruct), DATA (folder with train.parquet and
# test.parquet from prepare_data.sh), ROLLOUT (vllm | sglang), NGPUS, NNODES, SIM_ENDPOINT and SIM_MODEL
# (read by agent_loops.yaml), PYTHON.
RECIPE_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
MODEL="${MODEL:-Qwen/Qwen2.5-3B}"
DATA="${DATA:-data/verl}"
ROLLOUT="${ROLLOUT:-vllm}"
NGPUS="${NGPUS:-4}"
NNODES="${NNODES:-1}"
PYTHON="${PYTHON:-python3}"
# A base model has no chat template: veRL's prompt-length filter applies the template, so it is off
# (zerosearch_agent enforces max_prompt_length itself and refuses longer prompts).
FILTER=True
case "$MODEL" in *Instruct*|*instruct*) ;; *) FILTER=False ;; esac

COMMON_ARGS=(
  data.train_files="$DATA/train.parquet"
  data.val_files="$DATA/test.parquet"
  data.train_batch_size=64
  data.max_prompt_length=4096
  data.max_response_length=4096
  data.filter_overlong_prompts=$FILTER
  data.return_raw_chat=True
  actor_rollout_ref.model.path="$MODEL"
  actor_rollout_ref.model.enable_gradient_checkpointing=True
  actor_rollout_ref.model.use_remove_padding=True
  actor_rollout_ref.actor.optim.lr=1e-6
  actor_rollout_ref.actor.clip_ratio=0.2
  actor_rollout_ref.actor.grad_clip=1.0
  actor_rollout_ref.actor.entropy_coeff=0.001
  # 64 prompts x 5 = 320 trajectories per step in 2 updates of 160 (veRL counts mini-batches in prompts
  # and needs a divisor of the batch; the reference's 256-trajectory mini-batch is not one)
  actor_rollout_ref.actor.ppo_mini_batch_size=32
  actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=8
  actor_rollout_ref.rollout.name="$ROLLOUT"
  actor_rollout_ref.rollout.n=5
  actor_rollout_ref.rollout.temperature=1.0
  actor_rollout_ref.rollout.top_p=0.95
  actor_rollout_ref.rollout.calculate_log_probs=True
  actor_rollout_ref.rollout.max_model_len=8192
  actor_rollout_ref.rollout.gpu_memory_utilization=0.5
  actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu=8
  actor_rollout_ref.ref.log_prob_micro_batch_size_per_gpu=8
  actor_rollout_ref.rollout.agent.agent_loop_config_path="$RECIPE_DIR/agent_loops.yaml"
  actor_rollout_ref.rollout.agent.default_agent_loop=zerosearch_agent
  reward.custom_reward_function.path=pkg://zerosearch.integrations.verl.reward
  reward.custom_reward_function.name=compute_score
  trainer.total_training_steps=203
  trainer.n_gpus_per_node="$NGPUS"
  trainer.nnodes="$NNODES"
  trainer.save_freq=50
  trainer.test_freq=50
  trainer.val_before_train=True
  trainer.project_name=zerosearch-verl
  trainer.logger='["console"]'
)
