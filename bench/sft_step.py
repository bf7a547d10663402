"""One cold-start SFT step, timed: the full-logits loss against the LM head at the trained tokens only.

Same model, same batch of real multi-hop demonstrations (built from the world with real BM25), same run:

    full       transformers' causal-LM loss: logits [B, T, vocab] at every position
    head-only  zerosearch.training.sft.head_only_loss: the decoder, then the head at the labelled positions only

each in fp32 and under bf16 autocast (SFTConfig.dtype "bf16-mixed"). Forward + backward + AdamW step,
median of --repeats after one warm-up step. Also checks that the two losses agree.

    python bench/sft_step.py [--batch 8] [--repeats 3] [--threads 2]

Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    from zerosearch.data.qa import load_qa
    from zerosearch.engines import EngineConfig, build_engine
    from zerosearch.models import load
    from zerosearch.training.sft import _Collator, encode_example, head_only_loss
    from zerosearch.training.warmup import corpus_titles, demonstrations
    from zerosearch.data.world import cached_world

    world = cached_world()
    with build_engine(EngineConfig.from_dict({"name": "bm25", "corpus": str(world / "corpus.jsonl"), "k": 3})) as bm25:
        demos, _ = demonstrations(load_qa(world / "train.jsonl"), bm25, examples=args.batch,
                                  titles=corpus_titles(world / "corpus.jsonl"))
    model, tok = load(args.model)
    batch = _Collator(tok.pad_token_id)([encode_example(d, tok, 1024) for d in demos[:args.batch]])
    opt = torch.optim.AdamW(model.parameters(), lr=1e-12)  # a real update's cost, a negligible change
    losses: dict[str, float] = {}

    def step(kind: str, autocast: bool) -> float:
        t0 = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            loss = model(**batch).loss if kind == "full" else head_only_loss(model, batch)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses[f"{kind}/{'bf16-mixed' if autocast else 'fp32'}"] = float(loss)
        return time.perf_counter() - t0

    out: dict[str, float] = {}
    for autocast in (False, True):
        for kind in ("full", "head-only"):
            step(kind, autocast)  # warm-up
            out[f"s/{kind}/{'bf16-mixed' if autocast else 'fp32'}"] = round(
                statistics.median(step(kind, autocast) for _ in range(args.repeats)), 2)
    print(json.dumps({"bench": "sft_step", "batch": args.batch, "tokens": int(batch["attention_mask"].sum()),
                      "trained_tokens": int((batch["labels"] != -100).sum()), "threads": args.threads,
                      "machine": f"{platform.machine()}, torch {torch.__version__}",
                      **out, "speedup_head_only_fp32": round(out["s/full/fp32"] / out["s/head-only/fp32"], 2),
                      "speedup_head_only_bf16": round(out["s/full/bf16-mixed"] / out["s/head-only/bf16-mixed"], 2),
                      "loss_gap_fp32": abs(losses["full/fp32"] - losses["head-only/fp32"])}))


if __name__ == "__main__":
    main()
