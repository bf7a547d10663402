"""zerosearch eval --model M --engine bm25 --corpus world --data world --method direct,rag,search-agent --out DIR

`--data` takes QA files (comma-separated; Search-R1/FlashRAG JSONL or parquet, ZeroSearch parquet) or
`world` / `world:SPLIT` (the synthetic world; its test split by default). `--corpus world` points a local
engine at the world's corpus. Rerunning with the same --out resumes an interrupted evaluation.
"""

from __future__ import annotations

import argparse
from contextlib import contextmanager

from zerosearch.engines.config import add_engine_arguments


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="smollm2-135m-instruct", help="model name, checkpoint dir or LoRA adapter dir")
    p.add_argument("--data", required=True, help="QA file(s), comma-separated, or world[:train|dev|test]")
    p.add_argument("--method", default="direct,cot,rag,search-agent",
                   help="comma-separated: direct, cot, r1, rag, search-agent (default: %(default)s)")
    p.add_argument("--limit", type=int, help="a seeded sample of N questions per dataset")
    p.add_argument("--seed", type=int, default=0, help="sub-sampling and sampling seed")
    p.add_argument("--out", required=True, help="folder: eval.json, predictions.jsonl, results.{md,csv,json}")
    p.add_argument("--max-turns", type=int, default=4, help="search-agent action turns")
    p.add_argument("--max-tokens", type=int, default=512, help="tokens per turn (search-agent) or per answer (cot, r1)")
    p.add_argument("--batch-size", type=int, default=8, help="generation batch (hf backend)")
    p.add_argument("--backend", choices=("hf", "vllm"), default="hf",
                   help="hf: transformers (CPU/GPU); vllm: vLLM offline inference on a GPU (pip install 'zerosearch[vllm]')")
    p.add_argument("--policy-temperature", dest="policy_temperature", type=float, default=0.0, help="0: greedy (default)")
    p.add_argument("--world-dir", help="where the synthetic world lives (default: the cache dir)")
    p.add_argument("--no-progress", action="store_true")
    add_engine_arguments(p, default="bm25")


def run(args: argparse.Namespace) -> int:
    import dataclasses

    from zerosearch.data.qa import resolve_qa
    from zerosearch.engines import EngineConfig, build_engine
    from zerosearch.engines.self_search import bind_policy
    from zerosearch.evaluation.behaviour import hops_markdown
    from zerosearch.evaluation.eval import NEEDS_ENGINE, EvalConfig, markdown_table, run_eval
    from zerosearch.agent.generation import HFBackend
    from zerosearch.models import load

    cfg = EvalConfig(methods=[m.strip() for m in args.method.split(",") if m.strip()], k=args.engine_k or 3,
                     max_turns=args.max_turns, max_new_tokens=args.max_tokens, temperature=args.policy_temperature,
                     seed=args.seed)
    records, world = resolve_qa(args.data, limit=args.limit, seed=args.seed, world_dir=args.world_dir)
    engine = None
    if any(m in NEEDS_ENGINE for m in cfg.methods):
        ecfg = dataclasses.replace(EngineConfig.from_args(args), k=cfg.k)
        engine = build_engine(ecfg.on_world(world, world_dir=args.world_dir))
    if args.backend == "vllm":
        from vllm import LLM

        from zerosearch.agent.generation import VLLMBackend

        llm = LLM(model=args.model, seed=args.seed)
        tok = llm.get_tokenizer()
        backend = VLLMBackend(llm, tok)
    else:
        model, tok = load(args.model)
        backend = HFBackend(model.eval(), tok, batch_size=args.batch_size)
    bind_policy(engine, backend, tok)  # `--engine self`: the evaluated policy writes its own documents
    meta = {"model": args.model, "data_spec": args.data, "limit": args.limit}
    try:
        with _progress(not args.no_progress) as progress:
            result = run_eval(records, backend, tok, engine, cfg, args.out, meta=meta, progress=progress)
    finally:
        if engine is not None:
            engine.close()
    print(markdown_table(result["summary"]) + "\n")
    if any(label != "unknown" for groups in result["by_hops"].values() for label in groups):
        print(hops_markdown(result["by_hops"]) + "\n")
    print(f"{len(records)} questions x {len(cfg.methods)} methods in {result['seconds_this_run']:.0f} s; "
          f"results in {args.out}/results.{{md,csv,json}}")
    return 0


@contextmanager
def _progress(enabled: bool):
    if not enabled:
        yield None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    with Progress(TextColumn("[bold]eval {task.fields[method]}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn()) as prog:
        task = prog.add_task("eval", total=None, method="")
        yield lambda done, total, method: prog.update(task, completed=done, total=total, method=method)
