"""The training configuration: one YAML file per experiment, overridable from the command line.

    zerosearch train --config configs/tiny-grpo.yaml train.steps=20 algorithm.kl_loss_coef=0 --out runs/x

Every section is a typed pydantic model with `extra="forbid"`, so a misspelt key is an error naming the
file and the field, not a silently ignored setting. Overrides are `dotted.key=value`, the value parsed as
YAML (`0.5`, `true`, `[q_proj, v_proj]`, `null`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ModelSection(_Section):
    """The policy being trained (and, for PPO, the critic's backbone): which model, where, and how much of it trains."""

    name: str = "smollm2-135m-instruct"  # anything zerosearch.models.load accepts
    dtype: Literal["float32", "bfloat16", "float16", "auto"] = "auto"  # auto: bf16 on a GPU, fp32 on a CPU
    device: str = "auto"  # torch device ("cpu", "cuda", "cuda:1"); auto: cuda when available, else cpu
    lora_r: int = Field(0, ge=0)  # 0: full fine-tuning; > 0: train a PEFT LoRA adapter of this rank
    lora_alpha: int = 32  # LoRA scaling alpha (the update is scaled by lora_alpha / lora_r)
    lora_dropout: float = 0.0  # dropout on the LoRA adapter's input
    lora_targets: list[str] = ["q_proj", "k_proj", "v_proj", "o_proj"]  # module names that get a LoRA adapter
    gradient_checkpointing: bool = False  # recompute activations in the backward pass: less memory, slower steps


class DataSection(_Section):
    """The questions trained on and the fixed dev batch evaluated during training."""

    # A QA file (JSONL/JSON/parquet), or "world" for the built-in synthetic world's train split.
    train: str = "world"
    # Fixed dev batch evaluated every `train.eval_every` steps: a file, "world" (its dev split) or null.
    dev: str | None = "world"
    dev_size: int = Field(32, ge=1)  # questions in the dev batch (the first ones of data.dev)
    world: dict[str, Any] = {}  # zerosearch.data.world.WorldConfig fields, when train/dev is "world"
    world_dir: str | None = None  # where the world is written (default: the cache dir)


class RolloutSection(_Section):
    """How the policy generates its search trajectories (zerosearch.agent.rollout) in training and dev evaluation."""

    max_turns: int = 4  # action turns (search or invalid) before the forced answer turn
    max_new_tokens_per_turn: int = 500  # generation budget of one turn
    max_obs_tokens: int = 2048  # tokens of one <information> block, tags included (the documents are cut)
    max_prompt_tokens: int = 2048  # a longer question prompt is an error
    max_total_tokens: int = 4096  # prompt + response; a trajectory with no room left ends
    temperature: float = 1.0  # the policy's sampling temperature
    top_p: float = 1.0  # nucleus sampling; 1.0 keeps the sampler equal to the softmax the trainer scores
    n: int = Field(5, ge=1)  # samples per question (GRPO group size)
    format_weight: float = 0.0  # Search-R1's format term in the reward, 0: off (zerosearch.reward.f1_reward)
    batch_size: int = Field(8, ge=1)  # generation micro-batch
    backend: Literal["hf", "vllm"] = "hf"  # the policy's generator; training supports hf only (vllm is refused)


class CurriculumSection(_Section):
    """The simulated engine's noise curriculum (zerosearch.training.curriculum, the paper's eq. 1): the
    probability that a query gets noisy documents rises from p_start to p_end over train.steps."""

    p_start: float = 0.0  # noise probability at the first step
    p_end: float = 0.5  # noise probability at the last step (train.steps)
    base: float = 4.0  # the exponential curve's base b: > 1 rises slowly then fast, 1 is linear
    fixed: float | None = None  # a constant noise probability instead (the paper's "random" ablation)


class OptimSection(_Section):
    """The optimizer (AdamW), its schedule, the PPO-style epochs and batches, and the step's speed switches."""

    lr: float = 1e-6  # the policy's AdamW learning rate
    critic_lr: float = 1e-5  # the critic's AdamW learning rate (PPO)
    weight_decay: float = 0.01  # AdamW weight decay (policy and critic)
    betas: tuple[float, float] = (0.9, 0.999)  # AdamW betas (policy and critic)
    # Linear warm-up over this fraction of train.steps, then constant (the paper: 0.95 GRPO, 0.285 PPO).
    # Counted in *training* steps, as veRL does (int(ratio * steps) of them), whatever the number of
    # optimizer steps per training step (rollout batch / mini_batch_size x ppo_epochs).
    warmup_ratio: float = Field(0.0, ge=0.0, le=1.0)
    critic_warmup_ratio: float = Field(0.0, ge=0.0, le=1.0)  # the critic's own (veRL's default: none)
    grad_clip: float = 1.0  # gradients clipped to this global norm (policy and critic separately)
    ppo_epochs: int = Field(1, ge=1)  # passes over each rollout batch
    mini_batch_size: int = Field(8, ge=1)  # trajectories per optimizer step
    micro_batch_size: int = Field(4, ge=1)  # trajectories per forward/backward (gradient accumulation)
    # Speed (zerosearch.training.packing, bench/step.py); both leave the maths unchanged and default to off.
    sort_by_length: bool = False  # micro-batches of similar length, trimmed: less padding, same losses
    # Old log-probs = the sampler's own (HFBackend reports them) instead of a separate forward pass; they
    # agree to float noise. Needs train.loss_mask (inserted tokens have no sampler log-prob).
    reuse_sampler_logprobs: bool = False
    # Keep each row's keys/values between turns and prefill a group's shared prompt once
    # (zerosearch.agent.prefix_cache): the next turn feeds only its new tokens. Same sampler, float rounding aside.
    reuse_kv_cache: bool = False
    # Each micro-batch's distinct prompts run once in the log-prob and update forwards (and backward),
    # their KV shared by the group's rows (zerosearch.training.packing): same log-probs and gradients, fewer tokens.
    # Micro-batches are then built of whole groups (instead of sort_by_length's order).
    share_prompts: bool = False
    # The LM head (and its float32 log-softmax) only at the loss mask's tokens, not at every response token
    # (zerosearch.agent.head): same log-probs there, 0 elsewhere; less time and much less memory in the
    # log-prob and update passes. Plain-head models only (Llama, Mistral, Qwen2/3); others ignore it.
    loss_token_logits: bool = False
    # "bf16": every forward pass of a step (generation, log-probs, the update's forward) under bf16
    # autocast; weights, gradients and AdamW state stay fp32 (zerosearch.agent.precision). Changes the numbers
    # (log-probs move by ~0.04 on average), a step ~1.5x faster than fp32 with the same switches where bf16 is
    # native (AVX512-BF16/AMX, GPUs; bench/step.py run 6); refused elsewhere.
    precision: Literal["fp32", "bf16"] = "fp32"

    @model_validator(mode="before")
    @classmethod
    def _renamed(cls, data: Any) -> Any:
        if isinstance(data, dict) and "warmup_steps" in data:
            raise ValueError("warmup_steps was removed: it counted optimizer steps, not training steps; use "
                             "warmup_ratio, a fraction of train.steps (the paper: 0.95 GRPO, 0.285 PPO actor)")
        return data


class TrainSection(_Section):
    """The training loop: how many steps, evaluation and checkpoints, and when failed searches stop it."""

    steps: int = Field(200, ge=1)  # training steps (one rollout batch each)
    batch_size: int = Field(4, ge=1)  # questions per step (x rollout.n trajectories)
    seed: int = 0  # seeds torch and Python's RNGs, the data order and the rollouts' sampling
    loss_mask: bool = True  # False: the ablation that trains on retrieved tokens too
    eval_every: int = Field(10, ge=0)  # 0: never
    save_every: int = Field(50, ge=0)  # 0: only at the end
    keep_checkpoints: int = Field(2, ge=1)  # checkpoints kept; older ones are deleted
    samples_per_step: int = Field(2, ge=0)  # trajectories written to samples.jsonl each step
    # Failed searches (an engine error, a "No results found." fallback, no documents): a step in which
    # more than this share of the searches failed is skipped (not trained on), logged and counted.
    max_failed_search_share: float = Field(0.5, ge=0.0, le=1.0)
    # After this many such skipped steps in a row the run stops, its last checkpoint intact.
    max_consecutive_failed_steps: int = Field(3, ge=1)


class MonitorSection(_Section):
    """Collapse monitors (zerosearch.training.monitors): each is checked every step on the step's metrics; a
    threshold crossed warns in the progress line and logs `alarm/<name>` = 1. null switches one off."""

    window: int = Field(5, ge=1)  # moving average over this many steps (reward, length, rates)
    reward_drop: float | None = Field(0.5, gt=0, le=1)  # reward mean below (1 - this) x its best window mean
    # reward_drop fires only once that best exceeded this (a random policy's ~0 is no peak).
    min_reward: float = Field(0.05, ge=0)
    entropy_growth: float | None = Field(3.0, gt=1)  # entropy mean above this x its first window mean
    kl_max: float | None = Field(1.0, gt=0)  # per-token k3 KL to the reference above this
    length_growth: float | None = Field(2.0, gt=1)  # response tokens mean above this x its first window mean
    valid_action_drop: float | None = Field(0.5, gt=0, le=1)  # valid-action / answered rate below (1-this) x best
    stop_on_collapse: bool = False  # True: stop the run (last checkpoint kept) when an alarm lasts `patience` steps
    patience: int = Field(3, ge=1)  # steps in a row an alarm must last before stop_on_collapse stops the run


class TrainConfig(_Section):
    model: ModelSection = ModelSection()
    data: DataSection = DataSection()
    engine: dict[str, Any] = {"name": "simulated"}  # the training engine: zerosearch.engines.EngineConfig fields
    # The dev batch's engine: real or answer-blind (a gold-seeing one is refused). null: the training
    # engine when it is a real engine, else BM25 over the world's corpus when data.dev is `world`, else the
    # training simulator in answer-blind mode (zerosearch.evaluation.dev_eval.dev_engine).
    eval_engine: dict[str, Any] | None = None
    rollout: RolloutSection = RolloutSection()
    algorithm: dict[str, Any] = {"name": "grpo"}  # the RL algorithm: name + that algorithm's hyper-parameters
    curriculum: CurriculumSection = CurriculumSection()
    optim: OptimSection = OptimSection()
    train: TrainSection = TrainSection()
    monitor: MonitorSection = MonitorSection()
    # `zerosearch train-trl` only: TRL-only trl.GRPOConfig fields (use_vllm, vllm_mode, logging_steps,
    # report_to, ...); the shared sections above set the rest (zerosearch.integrations.trl.grpo_config).
    trl: dict[str, Any] = {}

    @model_validator(mode="after")
    def _check_nested(self) -> TrainConfig:
        from zerosearch import algorithms
        from zerosearch.engines.config import EngineConfig

        # Only ValueError becomes a validation error naming the file; a TypeError (an unknown keyword, a
        # value of the wrong type compared) would escape as a traceback, so it is said as one too.
        try:
            EngineConfig.from_dict(self.engine, source="engine")
            if self.eval_engine is not None:
                EngineConfig.from_dict(self.eval_engine, source="eval_engine")
        except TypeError as e:
            raise ValueError(f"engine: {e}") from None
        hp = dict(self.algorithm)
        try:
            algorithms.get(hp.pop("name", "grpo"), **hp)  # unknown names and hyper-parameters fail here
        except TypeError as e:
            raise ValueError(f"algorithm: {e}") from None
        return self


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """`a.b=v` sets `raw["a"]["b"] = yaml(v)`, creating sections as needed."""
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"override {item!r} is not of the form section.key=value")
        node = raw
        *parents, leaf = key.split(".")
        for p in parents:
            child = node.setdefault(p, {})
            if not isinstance(child, dict):
                raise ValueError(f"override {item!r}: {p!r} is not a section")
            node = child
        try:
            node[leaf] = yaml.safe_load(value)
        except (yaml.YAMLError, RecursionError) as e:
            problem = "nested too deeply" if isinstance(e, RecursionError) else " ".join(str(e).split())
            raise ValueError(f"override {item!r}: the value is not valid YAML ({problem})") from None
    return raw


def load_train_config(path: str | Path | None, overrides: list[str] = ()) -> TrainConfig:
    raw: dict[str, Any] = {}
    source = "defaults"
    if path is not None:
        source = str(path)
        data = Path(path).read_bytes()
        try:
            raw = yaml.safe_load(data.decode("utf-8")) or {}
        except UnicodeDecodeError as e:
            line = data.count(b"\n", 0, e.start) + 1
            raise ValueError(f"{path}: line {line}: not valid UTF-8 (byte {data[e.start]:#04x}); save the file as "
                             "UTF-8") from None
        except yaml.YAMLError as e:
            raise ValueError(f"{path}: not valid YAML: {e}") from None
        except RecursionError:
            raise ValueError(f"{path}: not valid YAML: nested too deeply") from None
        if not isinstance(raw, dict):
            raise ValueError(f"{path}: expected a mapping of sections at the top level")
    raw = apply_overrides(raw, list(overrides))
    try:
        return TrainConfig.model_validate(raw)
    except ValidationError as e:
        problems = "; ".join(f"{'.'.join(str(x) for x in err['loc']) or '(top)'}: {err['msg']}" for err in e.errors())
        raise ValueError(f"{source}: {problems}") from None


def dump_config(cfg: TrainConfig) -> str:
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)
