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
from zerosearch.training.metrics import plot_run

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
    # "float32"; "bfloat16" (weights in bf16: fastest, but Adam's small updates round away); "bf16-mixed"
    # (fp32 weights, bf16 matmuls under autocast: measured 1.6x faster than fp32 per step on 2 CPU cores)
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


def head_only_loss(model: Any, inputs: dict[str, Any], num_items: Any = None) -> Any | None:
    """The causal-LM loss with the LM head run at the labelled positions only (zerosearch.agent.head), or None
    for a model whose logits are not a plain head over the decoder. A demonstration's loss covers ~1/6 of
    its tokens (the retrieved documents get none), so the full [B, T, vocab] logits were mostly waste: the
    largest tensors of the step (1.2 GB per copy at batch 8 x 768 for SmolLM2's 49k vocabulary).
    Same value as transformers' loss: the mean over labelled tokens, or their sum / `num_items` where the
    Trainer counts tokens across gradient accumulation."""
    from zerosearch.agent.head import head_logprobs, split_head

    parts = split_head(model)
    if parts is None:
        return None
    decoder, head = parts
    labels = inputs["labels"][:, 1:]
    keep = labels != IGNORE
    hidden = decoder(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"]).last_hidden_state
    logp = head_logprobs(head, hidden[:, :-1], labels.clamp(min=0), keep)
    total = -logp.sum()
    return total / num_items if num_items is not None else total / keep.sum().clamp(min=1)


def _trainer_class() -> Any:
    from transformers import Trainer

    class HeadOnlyTrainer(Trainer):
        def compute_loss(self, model: Any, inputs: dict[str, Any], return_outputs: bool = False,
                         num_items_in_batch: Any = None) -> Any:
            n = num_items_in_batch if self.model_accepts_loss_kwargs else None
            loss = None if return_outputs else head_only_loss(model, inputs, n)
            if loss is None:
                return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            return loss

    return HeadOnlyTrainer


def sft(model_name: str, examples: list[dict[str, Any]], out_dir: str | Path, cfg: SFTConfig,
        *, resume: bool = False, progress: bool = True) -> dict[str, Any]:
    """Fine-tune `model_name` on `examples`; the result in `out_dir/final` (loadable by models.load)."""
    import torch
    from transformers import TrainingArguments

    from zerosearch.io import atomic_path
    from zerosearch.models import load

    out = Path(out_dir)
    if (out / "final").exists() and not resume:
        raise ValueError(f"{out} already holds a finished fine-tune; choose another --out")
    if cfg.dtype not in ("float32", "bfloat16", "bf16-mixed"):
        raise ValueError(f"SFTConfig.dtype must be float32, bfloat16 or bf16-mixed, got {cfg.dtype!r}")
    model, tok = load(model_name, dtype="float32" if cfg.dtype == "bf16-mixed" else cfg.dtype, seed=cfg.seed)
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
        bf16=cfg.dtype in ("bfloat16", "bf16-mixed"), dataloader_num_workers=0, remove_unused_columns=False)
    trainer = _trainer_class()(model=model, args=args, train_dataset=data, data_collator=_Collator(tok.pad_token_id))
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
