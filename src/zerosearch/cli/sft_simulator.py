"""zerosearch sft-simulator --base M --data sim_sft.jsonl --out DIR [--lora-r 16]

Fine-tunes the simulation LLM (transformers Trainer via zerosearch.training.sft; loss on the document tokens only;
full or LoRA; checkpoints, --resume). Serve the result with `--engine simulated --sim-model DIR/final
--sim-mode sft`.
"""

from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--base", default="smollm2-135m-instruct", help="the model to tune")
    p.add_argument("--data", required=True, help="zerosearch build-sft output")
    p.add_argument("--out", required=True, help="folder: checkpoints/, loss.jsonl, loss.png, final/")
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--lr", type=float, default=5e-5)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--grad-accum", type=int, default=1)
    p.add_argument("--lora-r", type=int, default=0, help="0: full fine-tuning")
    p.add_argument("--max-len", type=int, default=768)
    p.add_argument("--save-steps", type=int, default=50)
    p.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--resume", action="store_true", help="continue from the latest checkpoint in --out")


def run(args: argparse.Namespace) -> int:
    from zerosearch.training.sft import SFTConfig, read_examples, sft

    examples = read_examples(args.data)
    cfg = SFTConfig(lr=args.lr, steps=args.steps, batch_size=args.batch_size, grad_accum=args.grad_accum,
                    lora_r=args.lora_r, max_len=args.max_len, save_steps=args.save_steps, dtype=args.dtype,
                    seed=args.seed, eos=True)  # a simulator must learn where its documents end
    summary = sft(args.base, examples, args.out, cfg, resume=args.resume)
    print(f"SFT on {summary['examples']} examples: loss {summary['first_loss']:.3f} -> {summary['last_loss']:.3f}; "
          f"simulator: {summary['model']} (serve with --sim-model {summary['model']} --sim-mode sft)")
    return 0
