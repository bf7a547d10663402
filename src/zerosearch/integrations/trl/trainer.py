"""A ready trl.GRPOTrainer for a TrainConfig (`build_trainer`), and `train`, what `zerosearch train-trl` runs."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from zerosearch.agent.rollout import RolloutConfig
from zerosearch.data.qa import QARecord
from zerosearch.engines.base import SearchEngine
from zerosearch.integrations.trl.callback import ZeroSearchCallback
from zerosearch.integrations.trl.config import grpo_config, plan
from zerosearch.integrations.trl.deps import _require_trl, trl
from zerosearch.integrations.trl.reward import ZeroSearchReward
from zerosearch.integrations.trl.rollout import ZeroSearchRollout, build_dataset


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
    from zerosearch.io import atomic_write_text
    from zerosearch.training.config import dump_config

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
