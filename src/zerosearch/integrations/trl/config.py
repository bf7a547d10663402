"""From zerosearch's TrainConfig to trl.GRPOConfig: how the shared sections' sizes become TRL's (`plan`), the
loss mapping, and the checks that refuse what TRL cannot do the way `zerosearch train` does it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from zerosearch.integrations.trl.deps import _require_trl, trl

# zerosearch's loss aggregation -> TRL's loss_type with the same normalisation (see the README's table)
LOSS_TYPES = {"token-mean": "dapo", "seq-mean-token-mean": "grpo"}
# TRL losses without a zerosearch counterpart, allowed as `trl.loss_type` (a TRL-only knob)
TRL_ONLY_LOSSES = ("bnpo", "dr_grpo", "cispo", "sapo", "luspo", "vespo")
# GRPOConfig fields that the shared sections set; a `trl:` section may not set them as well
DERIVED = ("output_dir", "max_steps", "num_generations", "per_device_train_batch_size",
           "gradient_accumulation_steps", "steps_per_generation", "generation_batch_size", "num_iterations",
           "learning_rate", "weight_decay", "adam_beta1", "adam_beta2", "max_grad_norm", "warmup_steps", "warmup_ratio",
           "lr_scheduler_type", "seed", "temperature", "top_p", "top_k", "repetition_penalty", "beta", "epsilon",
           "epsilon_high", "entropy_coef", "scale_rewards", "max_completion_length", "remove_unused_columns",
           "gradient_checkpointing", "bf16", "fp16", "save_steps", "save_strategy")
_WHERE = {"max_steps": "train.steps", "num_generations": "rollout.n", "learning_rate": "optim.lr",
          "per_device_train_batch_size": "optim.micro_batch_size", "num_iterations": "optim.ppo_epochs",
          "gradient_accumulation_steps": "optim.mini_batch_size", "beta": "algorithm.kl_loss_coef",
          "epsilon": "algorithm.clip_eps", "epsilon_high": "algorithm.clip_eps_high", "seed": "train.seed",
          "temperature": "rollout.temperature", "top_p": "rollout.top_p", "entropy_coef": "algorithm.entropy_coef",
          "weight_decay": "optim.weight_decay", "warmup_steps": "optim.warmup_ratio",
          "warmup_ratio": "optim.warmup_ratio",
          "max_grad_norm": "optim.grad_clip", "scale_rewards": "algorithm.norm_adv_by_std",
          "save_steps": "train.save_every", "gradient_checkpointing": "model.gradient_checkpointing"}


def plan(cfg: Any, num_processes: int) -> dict[str, int]:
    """How zerosearch's sizes become TRL's: a rollout is train.batch_size questions x rollout.n samples;
    optim.mini_batch_size trajectories per optimizer step; optim.micro_batch_size per device per forward;
    optim.ppo_epochs passes over each rollout; train.steps rollouts."""
    traj = cfg.train.batch_size * cfg.rollout.n
    micro, mini = cfg.optim.micro_batch_size, cfg.optim.mini_batch_size
    per_forward = micro * num_processes
    problems = []
    if traj % mini:
        problems.append(f"train.batch_size x rollout.n = {traj} trajectories per rollout must be a multiple of "
                        f"optim.mini_batch_size = {mini}")
    if mini % per_forward:
        problems.append(f"optim.mini_batch_size = {mini} must be a multiple of optim.micro_batch_size x processes "
                        f"= {micro} x {num_processes}")
    if problems:
        raise ValueError("; ".join(problems))
    opt_per_rollout = traj // mini * cfg.optim.ppo_epochs
    return {"trajectories_per_rollout": traj, "per_device_train_batch_size": micro,
            "gradient_accumulation_steps": mini // per_forward, "steps_per_generation": traj // per_forward,
            "num_iterations": cfg.optim.ppo_epochs, "opt_steps_per_rollout": opt_per_rollout,
            "max_steps": cfg.train.steps * opt_per_rollout}


def grpo_config(cfg: Any, out_dir: str | Path, num_processes: int) -> Any:
    """trl.GRPOConfig from a TrainConfig: the shared sections mean what they mean for `zerosearch train`;
    the `trl:` section adds TRL-only knobs (use_vllm, vllm_mode, logging_steps, report_to, bf16, ...)."""
    _require_trl()
    hp = dict(cfg.algorithm)
    name = hp.pop("name", "grpo")
    if name != "grpo":
        raise ValueError(f"algorithm.name={name!r}: TRL trains GRPO-family losses only; run PPO and REINFORCE++ "
                         "with `zerosearch train` (or the veRL integration)")
    from zerosearch.algorithms import GRPO

    algo = GRPO(**hp)
    if algo.kl_loss_kind != "k3":
        raise ValueError(f"algorithm.kl_loss_kind={algo.kl_loss_kind!r}: TRL's KL term is the k3 estimator only")
    extra = dict(cfg.trl)
    clash = sorted(k for k in extra if k in DERIVED)
    if clash:
        where = ", ".join(f"{k} (set {_WHERE[k]})" if k in _WHERE else k for k in clash)
        raise ValueError(f"trl: {where} come from the shared sections; remove them from the trl section")
    loss_type = extra.pop("loss_type", None)
    if loss_type is None:
        if algo.loss_agg not in LOSS_TYPES:
            raise ValueError(f"algorithm.loss_agg={algo.loss_agg!r} has no TRL loss with the same normalisation; "
                             f"use one of {sorted(LOSS_TYPES)} or name a TRL loss in trl.loss_type")
        loss_type = LOSS_TYPES[algo.loss_agg]
    elif loss_type not in TRL_ONLY_LOSSES and loss_type != LOSS_TYPES.get(algo.loss_agg):
        raise ValueError(f"trl.loss_type={loss_type!r} contradicts algorithm.loss_agg={algo.loss_agg!r} (which is "
                         f"TRL's {LOSS_TYPES.get(algo.loss_agg)!r}); set one of them")
    if extra.get("mask_truncated_completions"):
        raise ValueError("trl.mask_truncated_completions: a search-agent turn ends at a stop string, not at EOS, so "
                         "TRL would mask every trajectory; zerosearch counts truncation itself")
    if extra.get("vllm_tensor_parallel_size", 1) > 1 or extra.get("vllm_enable_sleep_mode"):
        raise ValueError("trl.vllm_tensor_parallel_size > 1 and vllm_enable_sleep_mode are not supported by the "
                         "multi-turn rollout (every rank generates its own rows, turn by turn); use server mode")
    sizes = plan(cfg, num_processes)
    o, r = cfg.optim, cfg.rollout
    save = cfg.train.save_every
    kwargs = dict(
        output_dir=str(out_dir), max_steps=sizes["max_steps"], num_generations=r.n,
        per_device_train_batch_size=sizes["per_device_train_batch_size"],
        gradient_accumulation_steps=sizes["gradient_accumulation_steps"],
        steps_per_generation=sizes["steps_per_generation"], num_iterations=sizes["num_iterations"],
        learning_rate=o.lr, weight_decay=o.weight_decay, adam_beta1=o.betas[0], adam_beta2=o.betas[1],
        max_grad_norm=o.grad_clip, lr_scheduler_type="constant_with_warmup",
        # warm-up counted in training steps (rollouts) as in `zerosearch train`, given to TRL in optimizer steps
        warmup_steps=int(o.warmup_ratio * cfg.train.steps) * sizes["opt_steps_per_rollout"],
        seed=cfg.train.seed, temperature=r.temperature if r.temperature > 0 else 1.0, top_p=r.top_p,
        beta=algo.kl_loss_coef, epsilon=algo.clip_eps,
        epsilon_high=algo.clip_eps if algo.clip_eps_high is None else algo.clip_eps_high,
        entropy_coef=algo.entropy_coef, scale_rewards="group" if algo.norm_adv_by_std else "none",
        loss_type=loss_type, max_completion_length=r.max_total_tokens, remove_unused_columns=False,
        # TRL 1.16 defaults to weighting the KL by the importance ratio (DeepSeek-V3.2), which changes its
        # gradient even on-policy; zerosearch's GRPO adds the plain k3 KL. trl.use_bias_correction_kl=true opts in.
        use_bias_correction_kl=False,
        gradient_checkpointing=cfg.model.gradient_checkpointing, bf16=cfg.model.dtype == "bfloat16",
        fp16=cfg.model.dtype == "float16",
        save_strategy="steps" if save else "no", save_steps=max(save, 1) * sizes["opt_steps_per_rollout"],
    )
    kwargs.update({"logging_steps": sizes["opt_steps_per_rollout"], "report_to": "none", **extra})
    if cfg.rollout.temperature <= 0:
        raise ValueError("rollout.temperature must be > 0 for RL with TRL (its log-probs divide by the temperature)")
    return trl.GRPOConfig(**kwargs)
