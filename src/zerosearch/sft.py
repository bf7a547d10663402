"""Supervised fine-tuning on (prompt, segments) examples with the transformers Trainer.

Two users: the policy's cold start (`zerosearch warmup`: demonstrations of the search protocol, loss on
the policy's own text, not on the retrieved `<information>`), and the simulation LLM's tuning (loss on the
documents only). An example is

    {"prompt": "user message", "segments": [["text", true], ["<information>...</information>", false], ...]}

The prompt goes through the chat template (instruct models) or stays raw (base models) and never gets
loss; each segment is tokenised on its own and appended, exactly as the rollout appends pieces, and gets
loss when its flag is true. Full fine-tuning or LoRA (PEFT). Checkpoints and resume are the Trainer's own.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from zerosearch.io import atomic_write_jsonl, atomic_write_text, read_jsonl
from zerosearch.metrics import plot_run

IGNORE = -100  # the label PyTorch's cross-entropy skips


@dataclass
class SFTConfig:
    lr: float = 5e-5
    steps: int = 100
    batch_size: int = 8
    grad_accum: int = 1
    warmup_steps: int = 5
    max_len: int = 768
    lora_r: int = 0  # 0: full fine-tuning
    lora_alpha: int = 32
    lora_targets: list[str] = field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"])
    eos: bool = False  # end each example with the eos token (a simulator must learn to stop)
    save_steps: int = 50
    seed: int = 0
    dtype: str = "float32"


def read_examples(path: str | Path) -> list[dict[str, Any]]:
    """SFT examples from JSONL, checked so a bad row names its line and field."""
    rows = read_jsonl(path)
    for i, row in enumerate(rows, start=1):
        if not isinstance(row.get("prompt"), str):
            raise ValueError(f"{path}:{i}: field 'prompt' must be a string")
        segs = row.get("segments")
        if not isinstance(segs, list) or not segs or not all(
                isinstance(s, list) and len(s) == 2 and isinstance(s[0], str) and isinstance(s[1], bool) for s in segs):
            raise ValueError(f"{path}:{i}: field 'segments' must be a non-empty list of [text, train: bool] pairs")
        if not any(s[1] for s in segs):
            raise ValueError(f"{path}:{i}: field 'segments' has no segment with loss (flag true)")
    return rows


def encode_example(ex: dict[str, Any], tokenizer: Any, max_len: int, eos: bool = False) -> dict[str, list[int]]:
    from zerosearch.prompts import render_prompt

    chat = getattr(tokenizer, "chat_template", None) is not None
    ids = tokenizer(render_prompt(ex["prompt"], tokenizer), add_special_tokens=not chat).input_ids
    labels = [IGNORE] * len(ids)
    for text, train in ex["segments"]:
        seg = tokenizer(text, add_special_tokens=False).input_ids
        ids += seg
        labels += seg if train else [IGNORE] * len(seg)
    if eos:
        ids.append(tokenizer.eos_token_id)
        labels.append(tokenizer.eos_token_id)
    # Cut from the right: a prompt longer than max_len leaves nothing to learn and is dropped by the caller.
    return {"input_ids": ids[:max_len], "labels": labels[:max_len]}


class _Collator:
    def __init__(self, pad_id: int):
        self.pad_id = pad_id

    def __call__(self, rows: list[dict[str, list[int]]]) -> dict[str, Any]:
        import torch

        width = max(len(r["input_ids"]) for r in rows)
        pad = lambda xs, v: xs + [v] * (width - len(xs))  # right padding: training needs no generation
        return {"input_ids": torch.tensor([pad(r["input_ids"], self.pad_id) for r in rows]),
                "attention_mask": torch.tensor([pad([1] * len(r["input_ids"]), 0) for r in rows]),
                "labels": torch.tensor([pad(r["labels"], IGNORE) for r in rows])}


def sft(model_name: str, examples: list[dict[str, Any]], out_dir: str | Path, cfg: SFTConfig,
        *, resume: bool = False, progress: bool = True) -> dict[str, Any]:
    """Fine-tune `model_name` on `examples`; the result in `out_dir/final` (loadable by models.load)."""
    import torch
    from transformers import Trainer, TrainingArguments

    from zerosearch.io import atomic_path
    from zerosearch.models import load

    out = Path(out_dir)
    if (out / "final").exists() and not resume:
        raise ValueError(f"{out} already holds a finished fine-tune; choose another --out")
    model, tok = load(model_name, dtype=cfg.dtype, seed=cfg.seed)
    data = [encode_example(ex, tok, cfg.max_len, cfg.eos) for ex in examples]
    data = [d for d in data if any(x != IGNORE for x in d["labels"])]
    if not data:
        raise ValueError("no example has a trainable token within max_len")
    if cfg.lora_r > 0:
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(model, LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha,
                                                 target_modules=list(cfg.lora_targets), task_type="CAUSAL_LM"))
    args = TrainingArguments(
        output_dir=str(out / "checkpoints"), max_steps=cfg.steps, per_device_train_batch_size=cfg.batch_size,
        gradient_accumulation_steps=cfg.grad_accum, learning_rate=cfg.lr, warmup_steps=cfg.warmup_steps,
        lr_scheduler_type="constant_with_warmup", logging_steps=1, save_steps=cfg.save_steps, save_total_limit=2,
        seed=cfg.seed, report_to="none", disable_tqdm=not progress, use_cpu=not torch.cuda.is_available(),
        bf16=cfg.dtype == "bfloat16", dataloader_num_workers=0, remove_unused_columns=False)
    trainer = Trainer(model=model, args=args, train_dataset=data, data_collator=_Collator(tok.pad_token_id))
    has_ckpt = any((out / "checkpoints").glob("checkpoint-*")) if (out / "checkpoints").is_dir() else False
    trainer.train(resume_from_checkpoint=bool(resume and has_ckpt))
    losses = [{"step": h["step"], "loss": h["loss"]} for h in trainer.state.log_history if "loss" in h]
    atomic_write_jsonl(out / "loss.jsonl", losses)
    final = model.merge_and_unload() if cfg.lora_r > 0 else model
    with atomic_path(out / "final", is_dir=True) as tmp:
        final.save_pretrained(tmp)
        tok.save_pretrained(tmp)
    if losses:
        plot_run(out / "loss.jsonl", out / "loss.png", keys=("loss",))
    summary = {"examples": len(data), "steps": cfg.steps, "first_loss": losses[0]["loss"] if losses else math.nan,
               "last_loss": losses[-1]["loss"] if losses else math.nan, "model": str(out / "final")}
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=1))
    return summary
