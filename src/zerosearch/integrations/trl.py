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
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from zerosearch.data.qa import QARecord
from zerosearch.engines.base import SearchEngine
from zerosearch.agent.generation import GenerationBackend, GenOutput, HFBackend, StopReason, VLLMBackend
from zerosearch.integrations.common import (mean_metrics, noise_prob, noise_schedule, policy_text, qa_rows,
                                            rollout_metrics, score_policy)
from zerosearch.agent.rollout import RolloutConfig, rollout

try:  # TRL is an optional extra; everything that needs it checks `_require_trl()`
    import trl
    from transformers import TrainerCallback
except ImportError:  # pragma: no cover - exercised where trl is absent
    trl = None
    TrainerCallback = object  # type: ignore[assignment,misc]

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


def _require_trl() -> None:
    if trl is None:
        raise ImportError("zerosearch.integrations.trl needs TRL: pip install 'zerosearch[trl]' (trl>=1.16, "
                          "Python >= 3.11)")


# --- data ------------------------------------------------------------------------------------------------


def prompt_keys(records: Sequence[QARecord]) -> list[str]:
    """TRL's `prompt` for each record: its question (what TRL's logs show), made unique with the record id
    when a question text repeats, so every prompt maps back to exactly one record."""
    seen: dict[str, int] = {}
    for r in records:
        seen[r.question] = seen.get(r.question, 0) + 1
    return [r.question if seen[r.question] == 1 else f"{r.question} [id={r.id}]" for r in records]


def build_dataset(records: Sequence[QARecord]) -> Any:
    """A `datasets.Dataset` with `prompt` (see prompt_keys) and zerosearch's QA columns."""
    from datasets import Dataset

    rows = qa_rows(records)
    for row, key in zip(rows, prompt_keys(records)):
        row["prompt"] = key
    return Dataset.from_list(rows)


# --- generation through TRL's machinery ---------------------------------------------------------------------


class VLLMServerBackend:
    """TRL's vLLM server (`trl vllm-serve`) through its `VLLMClient`: one request per turn, n=1 per row, the
    stop strings in the sampling parameters. No per-row seed: the server takes one seed per request, which
    would make the identical prompts of a group sample identical completions."""

    def __init__(self, client: Any, tokenizer: Any, eos_ids: Sequence[int]):
        self.client, self.tokenizer, self.eos_ids = client, tokenizer, set(eos_ids)

    def generate(self, prompts_token_ids: list[list[int]], max_new_tokens: int, stop_strings: Sequence[str],
                 temperature: float, top_p: float, seed: int) -> list[GenOutput]:
        out = self.client.generate(prompts=[list(p) for p in prompts_token_ids], n=1, temperature=temperature,
                                   top_p=top_p, top_k=0, max_tokens=max_new_tokens, logprobs=0,
                                   generation_kwargs={"stop": list(stop_strings), "include_stop_str_in_output": True})
        results = []
        for ids, lps in zip(out["completion_ids"], out["logprobs"] or [None] * len(out["completion_ids"])):
            ids = list(ids)
            text = self.tokenizer.decode(ids, skip_special_tokens=False)
            # the client reports no finish reason: recover it from the ids
            reason: StopReason = ("stop" if any(s in text for s in stop_strings) else
                                  "eos" if ids and ids[-1] in self.eos_ids else "length")
            logprobs = [step[0] if step else float("nan") for step in lps] if lps is not None else None
            results.append(GenOutput(ids, text, reason, logprobs))
        return results


def _generation_context(trainer: Any) -> Any:
    """TRL's own context for generating with the trained model (unwrapped, ZeRO-3 params gathered, FSDP
    params summoned), as in GRPOTrainer._generate_single_turn."""
    import torch
    from trl.models import unwrap_model_for_generation

    stack = contextlib.ExitStack()
    model = stack.enter_context(unwrap_model_for_generation(
        trainer.model_wrapped, trainer.accelerator, gather_deepspeed3_params=trainer.args.ds3_gather_for_generation,
        gradient_checkpointing_kwargs=trainer.args.gradient_checkpointing_kwargs))
    stack.enter_context(torch.no_grad())
    dist = getattr(trainer, "_dist", None)
    if dist is not None and hasattr(dist, "summon_full_params"):
        stack.enter_context(dist.summon_full_params(trainer.model_wrapped, recurse=False))
    return stack, model


# --- the rollout function ------------------------------------------------------------------------------


class ZeroSearchRollout:
    """`rollout_func` for trl.GRPOTrainer: zerosearch's multi-turn search protocol for the prompts TRL hands
    it. `records` are the dataset's (the prompt -> record map); `schedule` the noise curriculum over
    `total_rollouts`; `opt_steps_per_rollout` turns TRL's global_step into rollouts done."""

    def __init__(self, records: Sequence[QARecord], engine: SearchEngine, tokenizer: Any, cfg: RolloutConfig,
                 *, total_rollouts: int, opt_steps_per_rollout: int = 1, curriculum: dict[str, Any] | None = None,
                 batch_size: int = 8, seed: int = 0):
        if cfg.n != 1:
            raise ValueError("TRL repeats each prompt num_generations times itself: the rollout config needs n=1")
        self.by_prompt = dict(zip(prompt_keys(records), records))
        self.engine, self.tokenizer, self.cfg = engine, tokenizer, cfg
        self.schedule = noise_schedule(total_rollouts, **(curriculum or {}))
        self.opt_steps_per_rollout, self.batch_size, self.seed = opt_steps_per_rollout, batch_size, seed
        self.history: list[dict[str, Any]] = []  # one entry per call: step, rollout, noise_prob, metrics
        self.last: Any = None  # the last zerosearch Rollout (its trajectories), for inspection
        self._pending: list[dict[str, float]] = []  # metrics not yet logged (ZeroSearchCallback pops them)
        self._hf: dict[int, HFBackend] = {}

    def records_for(self, prompts: Sequence[Any]) -> list[QARecord]:
        try:
            return [self.by_prompt[p] for p in prompts]
        except (KeyError, TypeError):
            bad = next(p for p in prompts if not isinstance(p, str) or p not in self.by_prompt)
            raise KeyError(f"prompt {str(bad)[:80]!r} is not in the dataset this rollout was built from; build "
                           "both with zerosearch.integrations.trl.build_dataset(records)") from None

    @contextlib.contextmanager
    def backend(self, trainer: Any) -> Iterator[GenerationBackend]:
        """The GenerationBackend over TRL's machinery for this call (see the module docstring)."""
        if not trainer.args.use_vllm:
            stack, model = _generation_context(trainer)
            with stack:
                if id(model) not in self._hf:  # its stop-string criterion scans the vocabulary: build once
                    self._hf[id(model)] = HFBackend(model, self.tokenizer, batch_size=self.batch_size)
                yield self._hf[id(model)]
            return
        vg = trainer.vllm_generation
        if trainer.args.vllm_mode == "colocate":
            yield VLLMBackend(vg.llm, self.tokenizer)
            return
        client = getattr(vg, "vllm_client", None)
        if client is None:  # TRL builds its client (and the weight-sync communicator) on the main process only
            from trl.generation.vllm_client import VLLMClient

            args = trainer.args
            url = args.vllm_server_base_url or f"http://{args.vllm_server_host}:{args.vllm_server_port}"
            client = vg.vllm_client = VLLMClient(base_url=url, connection_timeout=args.vllm_server_timeout)
        yield VLLMServerBackend(client, self.tokenizer, trainer.eos_token_ids)

    def rollouts_done(self, global_step: int) -> int:
        return global_step // self.opt_steps_per_rollout

    def __call__(self, prompts: list[Any], trainer: Any) -> dict[str, Any]:
        records = self.records_for(prompts)
        step = int(trainer.state.global_step)
        done = self.rollouts_done(step)
        p = noise_prob(self.schedule, done)
        rank = trainer.accelerator.process_index
        # distinct sampling seeds per (seed, rollout, process): the groups on two ranks must not share noise
        seed = (self.seed * 1_000_003 + done) * 1009 + rank
        with self.backend(trainer) as backend:
            ro = rollout(records, backend, self.tokenizer, self.engine, self.cfg, noise_prob=p, seed=seed)
        self.last = ro
        stats = getattr(self.engine, "stats", dict)()
        local = rollout_metrics(ro, noise_prob=p, engine_stats=stats)
        metrics = _gather_mean(trainer.accelerator, local)
        self.history.append({"global_step": step, "rollout": done + 1, "noise_prob": p, "metrics": metrics})
        self._pending.append(metrics)
        with_lp = all(t.sampler_logprobs is not None for t in ro)
        return {
            "prompt_ids": [list(t.prompt_ids) for t in ro],
            "completion_ids": [list(t.response_ids) for t in ro],
            "logprobs": [list(t.sampler_logprobs) for t in ro] if with_lp else None,
            "env_mask": [list(t.info_mask) for t in ro],
            # extra columns for the reward functions (TRL pops env_mask before they see it)
            "info_mask": [list(t.info_mask) for t in ro],
            "golden_answers": [list(t.golden_answers) for t in ro],
            "zerosearch_turns": [t.turns for t in ro],
            "zerosearch_searches": [t.searches for t in ro],
            "zerosearch_end": [str(t.end) for t in ro],
        }

    def pop_metrics(self) -> dict[str, float]:
        """The mean of the rollouts' metrics since the last call; engine counters (cumulative) at their last."""
        pending, self._pending = self._pending, []
        out = mean_metrics(pending)
        if pending:
            out.update({k: v for k, v in pending[-1].items() if "/engine/" in k})
        return out


# Per-rollout counts: summed over processes (the rest are per-row means over equal shares: averaged)
_COUNTS = ("trajectories", "generated_tokens", "useful_draws", "noisy_draws", "engine_fallbacks", "truncated_tokens")


def _gather_mean(accelerator: Any, metrics: dict[str, float]) -> dict[str, float]:
    """One rollout's metrics over all processes: means averaged, counts and truncation summed, engine
    counters summed (every process has its own engine)."""
    if accelerator.num_processes == 1:
        return metrics
    from accelerate.utils import gather_object

    every = gather_object([metrics])
    out = mean_metrics(every)
    for k in out:
        name = k.split("/", 1)[-1]
        if name in _COUNTS or name.startswith(("engine/", "truncation/")):
            out[k] = sum(m.get(k, 0.0) for m in every)
    return out


# --- reward ----------------------------------------------------------------------------------------------


class ZeroSearchReward:
    """TRL reward function: zerosearch's F1 reward of the answer in the policy's OWN tokens (the mask-1
    tokens of each completion, passed as the `info_mask` column), never in retrieved or inserted text.
    EM, cover-EM, answered and format rates are logged through TRL's `log_metric`."""

    __name__ = "zerosearch_f1"

    def __init__(self, tokenizer: Any, format_weight: float = 0.0):
        self.tokenizer, self.format_weight = tokenizer, format_weight

    def __call__(self, prompts: list[Any], completions: list[Any], completion_ids: list[list[int]],
                 info_mask: list[list[int]], golden_answers: list[list[str]],
                 log_metric: Callable[[str, float], None] | None = None, **_: Any) -> list[float]:
        scores = [score_policy(policy_text(ids, mask, self.tokenizer), golds, format_weight=self.format_weight)
                  for ids, mask, golds in zip(completion_ids, info_mask, golden_answers)]
        if log_metric is not None and scores:
            for name in ("em", "cover_em", "f1", "answered", "valid_format"):
                log_metric(f"zerosearch/{name}", sum(s[name] for s in scores) / len(scores))
        return [s["reward"] for s in scores]


# --- logging ----------------------------------------------------------------------------------------------


class ZeroSearchCallback(TrainerCallback):  # type: ignore[misc,valid-type]
    """Adds the rollout statistics since the last log (turns, searches, noise probability, useful/noisy
    draws, engine fallbacks and leak counters, truncation, ...) to TRL's log line, and, on the main
    process, appends the line to `metrics_path` (metrics.jsonl, as `zerosearch train` writes)."""

    def __init__(self, rollout_func: ZeroSearchRollout, metrics_path: str | Path | None = None):
        self.rollout_func = rollout_func
        self.metrics_path = None if metrics_path is None else Path(metrics_path)

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **_: Any) -> None:
        if logs is None:
            return
        extra = self.rollout_func.pop_metrics()
        logs.update(extra)
        if state.log_history and state.log_history[-1].get("step") == state.global_step:
            state.log_history[-1].update(extra)  # Trainer.log appended its copy before calling callbacks
        if self.metrics_path is not None and state.is_world_process_zero:
            from zerosearch.io import append_jsonl

            row = {"step": state.global_step, **{k: v for k, v in logs.items() if _is_number(v)}}
            append_jsonl(self.metrics_path, row)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


# --- from zerosearch's TrainConfig to a GRPOTrainer -----------------------------------------------------------


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


def _initial_policy(cfg: Any, out_dir: Path) -> str:
    """A local checkpoint folder for the policy: TRL builds its reference model from the policy's
    `name_or_path`, so a model zerosearch builds in memory (tiny-random, the embedded SmolLM2) is saved
    once under out_dir/initial-policy."""
    from zerosearch.io import atomic_path
    from zerosearch.models import ALIASES, TINY, embedded_checkpoint, load

    name = cfg.model.name
    if name.lower() in ALIASES:
        return str(embedded_checkpoint())
    if name.lower() != TINY:  # a local checkpoint folder, or a hub id TRL can load itself
        return name

    target = out_dir / "initial-policy"
    if (target / "config.json").is_file():
        return str(target)
    model, tok = load(name, dtype="float32" if cfg.model.dtype == "auto" else cfg.model.dtype, device="cpu",
                      seed=cfg.train.seed)
    with atomic_path(target, is_dir=True) as tmp:
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
    return str(target)


def build_trainer(cfg: Any, out_dir: str | Path, *, engine: SearchEngine | None = None,
                  records: Sequence[QARecord] | None = None, rollout_cls: type = ZeroSearchRollout) -> Any:
    """A ready trl.GRPOTrainer for a TrainConfig (`engine` / `records` / `rollout_cls` replace the
    configured ones: tests pass recording doubles). Every process builds its own engine."""
    _require_trl()
    from accelerate import PartialState

    from zerosearch.integrations.common import load_records
    from zerosearch.models import load
    from zerosearch.training.trainer import engine_config

    out = Path(out_dir)
    # as TrainingArguments will build it: without cpu=True a CPU-only torchrun world reads as 1 process
    state = PartialState(cpu=bool(cfg.trl.get("use_cpu", False)))
    args = grpo_config(cfg, out, state.num_processes)
    world_dir = None
    if records is None or engine is None:
        recs, world_dir = load_records(cfg.data.train, world=cfg.data.world or None, world_dir=cfg.data.world_dir)
        records = recs if records is None else records
    with state.main_process_first():  # one process writes the initial checkpoint, the others read it
        policy_path = _initial_policy(cfg, out)
    model, tok = load(policy_path, dtype=cfg.model.dtype, device="cpu" if cfg.model.device == "auto" else
                      cfg.model.device, seed=cfg.train.seed)
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    if engine is None:
        from zerosearch.engines import build_engine

        engine = build_engine(engine_config(cfg.engine, world_dir))
    r = cfg.rollout
    rcfg = RolloutConfig(max_turns=r.max_turns, max_new_tokens_per_turn=r.max_new_tokens_per_turn,
                         max_obs_tokens=r.max_obs_tokens, max_prompt_tokens=r.max_prompt_tokens,
                         max_total_tokens=r.max_total_tokens, k=int(cfg.engine.get("k", 5)), n=1,
                         temperature=r.temperature, top_p=r.top_p, format_weight=r.format_weight)
    c = cfg.curriculum
    sizes = plan(cfg, state.num_processes)
    rollout_func = rollout_cls(records, engine, tok, rcfg, total_rollouts=cfg.train.steps,
                               opt_steps_per_rollout=sizes["opt_steps_per_rollout"],
                               curriculum={"p_start": c.p_start, "p_end": c.p_end, "base": c.base, "fixed": c.fixed},
                               batch_size=r.batch_size, seed=cfg.train.seed)
    peft_config = None
    if cfg.model.lora_r > 0:
        from peft import LoraConfig

        m = cfg.model
        peft_config = LoraConfig(r=m.lora_r, lora_alpha=m.lora_alpha, lora_dropout=m.lora_dropout,
                                 target_modules=list(m.lora_targets), task_type="CAUSAL_LM")
    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")  # rollout_func is "experimental" in TRL 1.x
    trainer = trl.GRPOTrainer(model=model, processing_class=tok, args=args,
                              reward_funcs=[ZeroSearchReward(tok, r.format_weight)],
                              train_dataset=build_dataset(records), rollout_func=rollout_func, peft_config=peft_config)
    # first in line, so TensorBoard/W&B callbacks see the rollout statistics in the same log line
    trainer.callback_handler.callbacks.insert(0, ZeroSearchCallback(rollout_func, out / "metrics.jsonl"))
    trainer.zerosearch_rollout = rollout_func
    trainer.zerosearch_engine = engine
    return trainer


def train(cfg: Any, out_dir: str | Path, *, resume: bool = False) -> dict[str, Any]:
    """Train, then export the policy to out_dir/final (a checkpoint `zerosearch eval --model` reads)."""
    from zerosearch.training.config import dump_config
    from zerosearch.io import atomic_write_text

    out = Path(out_dir)
    if (out / "metrics.jsonl").exists() and not resume:
        raise ValueError(f"{out} already holds a run; pass --resume to continue it or choose another --out")
    out.mkdir(parents=True, exist_ok=True)
    trainer = build_trainer(cfg, out)
    try:
        if trainer.accelerator.is_main_process:
            atomic_write_text(out / "config.yaml", dump_config(cfg))
        trainer.train(resume_from_checkpoint=True if resume else None)
        # save_model on every rank (it gathers ZeRO-3 / FSDP shards; the main process writes), then the
        # folder appears under its name in one rename: a crash never leaves a final/ that half loads.
        # A LoRA run saves its adapter, which zerosearch.models.load reads.
        tmp = out / ".final.tmp"
        trainer.save_model(str(tmp))
        if trainer.accelerator.is_main_process:
            trainer.processing_class.save_pretrained(tmp)
            if (out / "final").exists():
                shutil.rmtree(out / "final")
            os.replace(tmp, out / "final")
        trainer.accelerator.wait_for_everyone()
    finally:
        trainer.zerosearch_engine.close()
    last = next((row for row in reversed(trainer.state.log_history) if "loss" in row), {})
    if trainer.accelerator.is_main_process:
        atomic_write_text(out / "rollouts.json", json.dumps(
            [{k: v for k, v in h.items() if k != "metrics"} for h in trainer.zerosearch_rollout.history]))
    return last
