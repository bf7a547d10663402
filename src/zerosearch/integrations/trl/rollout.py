"""TRL's `rollout_func`: the dataset's prompt -> QARecord map, the GenerationBackends over TRL's machinery
(the trained model, in-process vLLM, the vLLM server), and `ZeroSearchRollout`, which runs zerosearch's own
multi-turn rollout (`zerosearch.agent.rollout.rollout`) for the prompts TRL hands it."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

from zerosearch.agent.generation import GenerationBackend, GenOutput, HFBackend, StopReason, VLLMBackend
from zerosearch.agent.rollout import RolloutConfig, rollout
from zerosearch.data.qa import QARecord
from zerosearch.engines.base import SearchEngine
from zerosearch.integrations.common import mean_metrics, noise_prob, noise_schedule, qa_rows, rollout_metrics

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
