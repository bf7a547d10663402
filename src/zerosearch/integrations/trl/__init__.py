"""zerosearch inside `trl.GRPOTrainer` (`pip install zerosearch[trl]`): TRL runs the optimisation
(accelerate: DDP, DeepSpeed, FSDP; vLLM for generation), zerosearch runs the search agent's rollout.

    zerosearch train-trl --config configs/trl-tiny-grpo.yaml --out runs/trl-tiny
    accelerate launch --num_processes 2 -m zerosearch train-trl --config ... --out ...

How the pieces meet (read against trl 1.16's grpo_trainer.py):

- Data: the dataset has a `prompt` column (the question, a readable key) plus zerosearch's QA columns.
  TRL hands `rollout_func(prompts, trainer)` the prompts of this process's generation batch, each
  already repeated `num_generations` times (a GRPO group); `ZeroSearchRollout` maps each back to its
  QARecord and runs ONE `zerosearch.agent.rollout.rollout` over them with n=1, so the output rows are in
  TRL's order and TRL's grouping is kept.
- Generation: a `zerosearch.agent.generation.GenerationBackend` over TRL's own machinery, chosen per call:
  the trainer's unwrapped model (TRL's `unwrap_model_for_generation`, ZeRO-3 gathered) with zerosearch's
  HFBackend when `use_vllm=False`; TRL's in-process vLLM `LLM` (colocate) through zerosearch's
  VLLMBackend; or TRL's vLLM server client (server mode), with the stop strings in the sampling
  parameters. TRL syncs the policy's weights into vLLM before it calls the rollout function.
- Output: `completion_ids` are the sampled ids exactly as sampled plus the inserted ones,
  `env_mask` = zerosearch's info mask (TRL multiplies it into the loss mask of the policy loss, KL and
  entropy), `logprobs` the sampler's log-probs (vLLM) with 0.0 on inserted tokens, or None (HF: TRL
  uses them only for vLLM's importance-sampling correction, and multiplies their difference by the
  mask, so the 0.0 on inserted tokens never enters). Extra columns reach the reward functions:
  `info_mask` (TRL consumes `env_mask` itself), gold answers and per-trajectory stats.
- Reward: `ZeroSearchReward` decodes the mask-1 tokens only (zerosearch.integrations.common) and
  scores them with zerosearch's F1 reward; EM, cover-EM, answered and format rates go to TRL's metrics.
- Curriculum: p(i) with i = rollouts done + 1, read from `trainer.state.global_step` at the rollout
  (the rollout happens before the first of its optimizer steps) and the number of optimizer steps per
  rollout, over `train.steps` rollouts, exactly as zerosearch's trainer numbers its steps.
- `ZeroSearchCallback` adds the rollout statistics (and the engine's counters, leak guard included) to
  every TRL log line, gathered over processes, and writes metrics.jsonl like `zerosearch train`.

TRL has GRPO-family losses only: PPO (a critic) and REINFORCE++ are zerosearch's trainer or veRL.

Modules: `rollout` (the dataset's prompts, the generation backends, ZeroSearchRollout), `reward`
(ZeroSearchReward), `callback` (ZeroSearchCallback), `config` (TrainConfig -> GRPOConfig: `plan`,
`grpo_config`), `trainer` (`build_trainer`, `train`), `deps` (the optional TRL import).
"""

from __future__ import annotations

from zerosearch.integrations.trl.callback import ZeroSearchCallback
from zerosearch.integrations.trl.config import DERIVED, LOSS_TYPES, TRL_ONLY_LOSSES, grpo_config, plan
from zerosearch.integrations.trl.reward import ZeroSearchReward
from zerosearch.integrations.trl.rollout import VLLMServerBackend, ZeroSearchRollout, build_dataset, prompt_keys
from zerosearch.integrations.trl.trainer import build_trainer, train

__all__ = ["DERIVED", "LOSS_TYPES", "TRL_ONLY_LOSSES", "VLLMServerBackend", "ZeroSearchCallback", "ZeroSearchReward",
           "ZeroSearchRollout", "build_dataset", "build_trainer", "grpo_config", "plan", "prompt_keys", "train"]
