"""Rollout throughput: zerosearch's loop vs the reference code's, same model, prompts and engine, one run.

- ours: `zerosearch.agent.rollout.rollout` with `HFBackend`: only active rows are generated, rows sorted by
  length, each row stops at its first `</search>`/`</answer>`, the sampled ids are kept.
- naive (the reference code's loop, Search-R1 / ZeroSearch): each turn the active rows' contexts are
  re-tokenised from text and re-padded, generated without stop strings up to `max_new_tokens_per_turn`
  (or eos), decoded, cut after the first closing tag, and the cut text appended as text.

Both run the same protocol (parse, corrective message, forced answer after `max_turns`) against the
same engine: a fake returning k fixed passages, so the comparison measures generation, not search.
"Useful" tokens are the sampled tokens up to and including each turn's closing tag (what a turn
needs); tokens/s is useful tokens per second of wall time. The naive loop also counts turns whose kept text re-tokenises to other ids than
were sampled (the off-policy drift our loop avoids by construction).

    python bench/rollout.py [--model tiny-random] [--questions 8] [--max-turns 2] [--max-new-tokens 128]
                            [--close-after 32]

A small untrained model rarely closes a tag (SmolLM2-135M ends its turns with eos or at the limit), and
then both loops generate the same tokens; `--close-after N` makes the model close a `<search>` after
about N tokens, as a trained policy does, to measure what stop strings save.

Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import re
import time
from collections import Counter
from typing import Any

import torch

from zerosearch.data.qa import QARecord
from zerosearch.engines.base import Document, SearchEngine, SearchRequest, format_documents
from zerosearch.agent.generation import STOP_STRINGS, HFBackend, first_stop
from zerosearch.prompts import FORCE_ANSWER, INFORMATION, INVALID_ACTION, search_agent_prompt
from zerosearch.agent.rollout import RolloutConfig, rollout

QUESTIONS = [
    ("What is the capital of France?", "Paris"), ("Who wrote Romeo and Juliet?", "William Shakespeare"),
    ("What is the largest ocean on Earth?", "Pacific Ocean"), ("Who painted the Mona Lisa?", "Leonardo da Vinci"),
    ("In which year did World War II end?", "1945"), ("What is the chemical symbol for gold?", "Au"),
    ("Which planet is known as the Red Planet?", "Mars"), ("Who developed the theory of relativity?", "Albert Einstein"),
    ("What is the tallest mountain in the world?", "Mount Everest"), ("Who was the first person on the Moon?", "Neil Armstrong"),
    ("What is the longest river in Africa?", "Nile"), ("Which country hosted the 2016 Summer Olympics?", "Brazil"),
    ("What is the hardest natural substance?", "Diamond"), ("Who composed the Fifth Symphony?", "Ludwig van Beethoven"),
    ("What is the smallest prime number?", "2"), ("Which element has atomic number 1?", "Hydrogen"),
]
PASSAGES = [
    ("Paris", "Paris is the capital and most populous city of France, on the Seine."),
    ("Pacific Ocean", "The Pacific Ocean is the largest and deepest of Earth's five oceanic divisions."),
    ("Mount Everest", "Mount Everest is Earth's highest mountain above sea level, in the Himalayas."),
    ("Albert Einstein", "Albert Einstein was a physicist who developed the theory of relativity."),
    ("World War II", "World War II lasted from 1939 to 1945 and involved most of the world's nations."),
]
_ACTION = re.compile(r"<(search|answer)>(.*?)</\1>", re.DOTALL)
_STOP = re.compile(r"</search>|</answer>")


class FixedDocsEngine(SearchEngine):
    name = "fixed-docs"

    def search(self, requests: list[SearchRequest]) -> list[list[Document]]:
        return [[Document(title=t, text=x, source=self.name) for t, x in PASSAGES[: r.k]] for r in requests]


class TagCloser:
    """`--close-after L`: a forward hook making the model act like a policy that knows the protocol. Each
    generate call, row b writes "<search>", L_b free tokens (L_b spread over [L/2, 3L/2]), then
    " </search>"; what comes after is the model's own. Both loops get the same hook."""

    def __init__(self, model: Any, tok: Any, close_after: int):
        self.open = tok("<search>", add_special_tokens=False).input_ids
        self.close = tok(" </search>", add_special_tokens=False).input_ids
        self.close_after, self.step = close_after, 0
        model.register_forward_hook(self, with_kwargs=True)

    def __call__(self, module: Any, args: Any, kwargs: dict[str, Any], output: Any) -> Any:
        if kwargs["input_ids"].shape[1] > 1:
            self.step = 0  # a prefill: a new generate call
        logits = output.logits[:, -1, :]
        for b in range(logits.shape[0]):
            at = len(self.open) + self.close_after // 2 + (b * 37) % (self.close_after + 1)
            forced = (self.open[self.step] if self.step < len(self.open) else
                      self.close[self.step - at] if 0 <= self.step - at < len(self.close) else None)
            if forced is not None:
                logits[b] = -1e4
                logits[b, forced] = 0.0
        self.step += 1
        return output


def naive_rollout(records: list[QARecord], model: Any, tok: Any, engine: SearchEngine, cfg: RolloutConfig,
                  batch_size: int, seed: int) -> dict[str, Any]:
    """The reference loop: text contexts, re-tokenised and re-padded every turn, no stop strings."""
    prompts = [search_agent_prompt(r.question, tok) for r in records]
    responses = [""] * len(records)
    useful = [0] * len(records)
    generated = mismatched = turns = 0
    done = [False] * len(records)
    answered = 0
    tok.padding_side = "left"
    t0 = time.perf_counter()
    for turn in range(cfg.max_turns + 1):
        final = turn == cfg.max_turns
        active = [i for i in range(len(records)) if not done[i]]
        if not active:
            break
        if final:
            for i in active:
                responses[i] += FORCE_ANSWER
        outs: dict[int, tuple[list[int], str]] = {}
        for b in range(0, len(active), batch_size):
            idx = active[b: b + batch_size]
            enc = tok([prompts[i] + responses[i] for i in idx], return_tensors="pt", padding=True,
                      add_special_tokens=False).to(model.device)
            kw: dict[str, Any] = {"do_sample": cfg.temperature > 0, "max_new_tokens": cfg.max_new_tokens_per_turn,
                                  "pad_token_id": tok.pad_token_id, "eos_token_id": tok.eos_token_id}
            if cfg.temperature > 0:  # the same sampling distribution as HFBackend (no default top-k)
                kw.update(temperature=cfg.temperature, top_p=cfg.top_p, top_k=0)
            with torch.random.fork_rng(), torch.inference_mode():
                torch.manual_seed(seed * 1000 + turn * 100 + b)
                new = model.generate(**enc, **kw)[:, enc.input_ids.shape[1]:].tolist()
            for i, row in zip(idx, new):
                n = row.index(tok.eos_token_id) + 1 if tok.eos_token_id in row else len(row)
                generated += n
                text = tok.decode(row[:n], skip_special_tokens=True)
                m = _STOP.search(text)
                outs[i] = (row[:n], text[: m.end()] if m else text)
                useful[i] += first_stop(row[:n], tok, STOP_STRINGS)[0]  # sampled tokens up to the tag
        requests, searchers = [], []
        for i in active:
            row, text = outs[i]
            kept = tok(text, add_special_tokens=False).input_ids  # what the reference trains on
            mismatched += kept != row[: len(kept)]
            responses[i] += text
            turns += 1
            m = _ACTION.search(text)
            if (m and m.group(1) == "answer") or final:
                done[i] = True
                answered += bool(m and m.group(1) == "answer")
            elif m and m.group(2).strip():
                requests.append(SearchRequest(query=m.group(2).strip(), k=cfg.k, row_id=records[i].id))
                searchers.append(i)
            else:
                responses[i] += INVALID_ACTION
        for i, docs in zip(searchers, engine.search(requests) if requests else []):
            responses[i] += INFORMATION.format(documents=format_documents(docs))
    seconds = time.perf_counter() - t0
    return {"seconds": round(seconds, 2), "generated_tokens": generated, "useful_tokens": sum(useful),
            "useful_tokens_per_s": round(sum(useful) / seconds, 2), "generated_tokens_per_s": round(generated / seconds, 2),
            "turns": turns, "answered": answered,
            "retokenised_mismatch_turns": mismatched}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--questions", type=int, default=8)
    ap.add_argument("--max-turns", type=int, default=2)
    ap.add_argument("--max-new-tokens", type=int, default=128)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--temperature", type=float, default=1.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--close-after", type=int, default=0,
                    help="simulate a protocol-following policy: close a <search> after ~N tokens (0: off)")
    args = ap.parse_args()
    from zerosearch.models import load

    model, tok = load(args.model, seed=0)
    model.eval()
    if args.close_after:
        TagCloser(model, tok, args.close_after)
    records = [QARecord(id=f"q{i}", question=q, golden_answers=[a], data_source="bench")
               for i, (q, a) in enumerate((QUESTIONS * 8)[: args.questions])]
    cfg = RolloutConfig(max_turns=args.max_turns, max_new_tokens_per_turn=args.max_new_tokens,
                        temperature=args.temperature, max_total_tokens=4096)
    engine = FixedDocsEngine()
    backend = HFBackend(model, tok, batch_size=args.batch_size)
    with torch.inference_mode():  # first-call overheads (allocator, kernels) are charged to neither loop
        model.generate(torch.tensor([[1, 2, 3]], device=model.device), max_new_tokens=8, do_sample=False,
                       pad_token_id=tok.pad_token_id)

    t0 = time.perf_counter()
    trajs = rollout(records, backend, tok, engine, cfg, seed=args.seed)
    seconds = time.perf_counter() - t0
    s = trajs.stats
    useful = sum(sum(t.info_mask) for t in trajs)
    ours = {"seconds": round(seconds, 2), "generated_tokens": s.generated_tokens, "useful_tokens": useful,
            "useful_tokens_per_s": round(useful / seconds, 2),
            "generated_tokens_per_s": round(s.generated_tokens / seconds, 2),
            "turns": sum(t.turns for t in trajs), "answered": sum(t.finished for t in trajs),
            "gen_seconds": round(s.gen_seconds, 2), "engine_seconds": round(s.engine_seconds, 4),
            "stop_reasons": dict(Counter(r for t in trajs for r in t.stop_reasons))}
    naive = naive_rollout(records, model, tok, engine, cfg, args.batch_size, args.seed)
    print(json.dumps({
        "bench": "rollout", "model": args.model, "device": str(model.device), "threads": torch.get_num_threads(),
        "questions": len(records), "max_turns": args.max_turns, "max_new_tokens_per_turn": args.max_new_tokens,
        "batch_size": args.batch_size, "temperature": args.temperature, "close_after": args.close_after,
        "engine": "fixed-docs fake (k=5 passages)",
        "ours": ours, "naive": naive,
        "useful_tokens_per_s_ratio": round(ours["useful_tokens_per_s"] / max(naive["useful_tokens_per_s"], 1e-9), 2),
    }))


if __name__ == "__main__":
    main()
