"""zerosearch ask "question" --model M --engine bm25 --corpus world : one search-agent run, shown readably.

Like the original project's inference script, with any engine: the model's thinking, each query, the
documents that came back and the final answer. Greedy by default; the engine never sees an answer.
"""

from __future__ import annotations

import argparse
import re

from zerosearch.engines.config import add_engine_arguments

_BLOCK = re.compile(r"<(think|search|information|answer)>(.*?)</\1>", re.DOTALL)
_STYLE = {"think": "dim", "rollout": "yellow", "search": "bold cyan", "information": "green", "answer": "bold magenta"}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("question")
    p.add_argument("--model", default="smollm2-135m-instruct", help="policy: model name, checkpoint or LoRA dir")
    p.add_argument("--max-turns", type=int, default=4)
    p.add_argument("--max-tokens", type=int, default=512, help="tokens per turn")
    p.add_argument("--policy-temperature", dest="policy_temperature", type=float, default=0.0, help="0: greedy")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--raw", action="store_true", help="print the raw trajectory text instead")
    p.add_argument("--world-dir", help="where the synthetic world lives (for --corpus world)")
    add_engine_arguments(p, default="bm25")


def segments(response_ids: list[int], info_mask: list[int], tokenizer) -> list[tuple[str, str]]:
    """(kind, text) pieces of a trajectory. Runs of tokens the policy sampled are split into its
    think/search/answer blocks (and 'text' between them); runs the rollout inserted are 'information'
    (the documents) or 'rollout' (the corrective and forced-answer messages)."""
    out: list[tuple[str, str]] = []
    start = 0
    for end in range(1, len(response_ids) + 1):
        if end < len(response_ids) and info_mask[end] == info_mask[start]:
            continue
        text = tokenizer.decode(response_ids[start:end], skip_special_tokens=True)
        if not info_mask[start]:
            m = _BLOCK.search(text)
            out.append(("information", m.group(2).strip()) if m and m.group(1) == "information" else ("rollout", text.strip()))
        else:
            pos = 0
            for m in _BLOCK.finditer(text):
                if text[pos: m.start()].strip():
                    out.append(("text", text[pos: m.start()].strip()))
                out.append((m.group(1), m.group(2).strip()))
                pos = m.end()
            if text[pos:].strip():
                out.append(("text", text[pos:].strip()))
        start = end
    return out


def run(args: argparse.Namespace) -> int:
    from rich.console import Console

    from zerosearch.data.qa import QARecord
    from zerosearch.engines import EngineConfig, build_engine
    from zerosearch.engines.self_search import bind_policy
    from zerosearch.evaluation.eval import AnswerBlind
    from zerosearch.agent.generation import HFBackend
    from zerosearch.models import load
    from zerosearch.agent.rollout import RolloutConfig, rollout

    ecfg = EngineConfig.from_args(args)
    model, tok = load(args.model)
    model.eval()
    cfg = RolloutConfig(max_turns=args.max_turns, max_new_tokens_per_turn=args.max_tokens, k=ecfg.k,
                        temperature=args.policy_temperature, prompt_overflow="truncate_left")
    record = QARecord(id="ask", question=args.question, golden_answers=[], data_source="ask")
    with build_engine(ecfg.on_world(None, world_dir=args.world_dir)) as engine:
        backend = HFBackend(model, tok, batch_size=1)
        bind_policy(engine, backend, tok)  # `--engine self`: the policy writes its own documents
        traj = rollout([record], backend, tok, AnswerBlind(engine), cfg, seed=args.seed)[0]
    console = Console(highlight=False)
    if args.raw:
        console.print(traj.response, markup=False)
    else:
        console.print(f"[bold]question:[/] {args.question}")
        for kind, text in segments(traj.response_ids, traj.info_mask, tok):
            console.print(f"[{_STYLE.get(kind, 'default')}]{kind}:[/] ", end="")
            console.print(text, markup=False, style=_STYLE.get(kind))
    console.print(f"[bold]answer:[/] {traj.answer if traj.answer is not None else '(none)'}   "
                  f"({traj.turns} turns, {traj.searches} searches, end: {traj.end})")
    return 0
