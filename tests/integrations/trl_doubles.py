"""Recording doubles shared by test_trl.py and the 2-process run (trl_ddp_run.py).

`RecordingEngine` wraps the real simulated engine and records every request's noise probability;
`MixedRollout` is zerosearch's TRL rollout function whose backend is TRL's (the trained model through
`unwrap_model_for_generation`) for half the rows and a scripted searcher for the other half: a random
3M-parameter policy never writes `<search>`, so without it no query would ever reach the engine. The
scripted rows search their question, then answer with the gold answer (reward 1); the sampled rows
score ~0, so every group has reward variance and the update has a gradient. For the loss and the mask,
a scripted turn is the backend's output like any other (info mask 1)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from zerosearch.engines.base import Document, SearchEngine, SearchRequest
from zerosearch.agent.generation import GenOutput
from zerosearch.integrations.trl import ZeroSearchRollout
from zerosearch.prompts import FORCE_ANSWER, INVALID_ACTION

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "configs" / "trl-tiny-grpo.yaml"
# small enough for a loaded 2-core CPU: 2 rollouts x 2 questions x 2 samples, one search turn
OVERRIDES = ["train.steps=2", "train.batch_size=2", "rollout.n=2", "rollout.max_turns=1",
             "rollout.max_new_tokens_per_turn=40", "rollout.max_obs_tokens=96", "rollout.max_prompt_tokens=512",
             "rollout.max_total_tokens=768", "optim.mini_batch_size=4", "optim.micro_batch_size=2",
             "optim.weight_decay=0.0", "optim.lr=0.01", "algorithm.kl_loss_coef=0.0",
             "algorithm.entropy_coef=0.0", "engine.max_new_tokens=24", "engine.k=2", "curriculum.p_end=0.8"]


class RecordingEngine(SearchEngine):
    name = "recording"

    def __init__(self, inner: SearchEngine):
        self.inner = inner
        self.calls: list[list[SearchRequest]] = []
        self.results: list[list[list[Document]]] = []

    def search(self, requests: list[SearchRequest]) -> list[list[Document]]:
        self.calls.append(list(requests))
        out = self.inner.search(requests)
        self.results.append(out)
        return out

    def stats(self) -> dict[str, Any]:
        return self.inner.stats()

    def close(self) -> None:
        self.inner.close()


class MixedBackend:
    def __init__(self, inner: Any, tokenizer: Any, golds: dict[str, list[str]]):
        self.inner, self.tok, self.golds = inner, tokenizer, golds
        self.calls: list[tuple[list[list[int]], list[GenOutput]]] = []

    def generate(self, prompts: list[list[int]], max_new_tokens: int, stop_strings: Sequence[str],
                 temperature: float, top_p: float, seed: int) -> list[GenOutput]:
        outs = list(self.inner.generate(prompts, max_new_tokens, stop_strings, temperature, top_p, seed))
        for i, p in enumerate(prompts):
            text = self.tok.decode(p)
            question = next(q for q in self.golds if f"Question: {q}" in text)
            tail = text[text.find(f"Question: {question}"):]  # the response so far
            if "<information>" in tail:  # a searcher's final turn: the gold answer
                outs[i] = self._out(f"<answer> {self.golds[question][0]} </answer>", max_new_tokens)
            elif i % 2 == 0 and all(s.strip() not in tail for s in (INVALID_ACTION, FORCE_ANSWER)):  # first turn
                outs[i] = self._out(f"<search> {question} </search>", max_new_tokens)
        self.calls.append(([list(p) for p in prompts], outs))
        return outs

    def _out(self, text: str, max_new_tokens: int) -> GenOutput:
        ids = self.tok(text, add_special_tokens=False).input_ids
        if len(ids) > max_new_tokens:
            raise ValueError(f"scripted turn {text!r} is {len(ids)} tokens, over max_new_tokens={max_new_tokens}")
        return GenOutput(ids, self.tok.decode(ids), "stop")


class MixedRollout(ZeroSearchRollout):
    """Records every call: TRL's global_step, what it returned, the engine calls it made, the backend's outputs."""

    def __init__(self, records: Any, *args: Any, **kwargs: Any):
        super().__init__(records, *args, **kwargs)
        self.golds = {r.question: list(r.golden_answers) for r in records}
        self.outputs: list[dict[str, Any]] = []
        self.trajectories: list[Any] = []
        self.engine_calls: list[list[list[SearchRequest]]] = []
        self.backends: list[MixedBackend] = []
        self.steps_seen: list[tuple[int, int]] = []  # (global_step, max_steps) at each call

    @contextlib.contextmanager
    def backend(self, trainer: Any) -> Iterator[Any]:
        with super().backend(trainer) as inner:
            b = MixedBackend(inner, self.tokenizer, self.golds)
            self.backends.append(b)
            yield b

    def __call__(self, prompts: list[Any], trainer: Any) -> dict[str, Any]:
        self.steps_seen.append((int(trainer.state.global_step), int(trainer.state.max_steps)))
        start = len(self.engine.calls)
        out = super().__call__(prompts, trainer)
        self.engine_calls.append(self.engine.calls[start:])
        self.outputs.append(out)
        self.trajectories.append(list(self.last))
        return out


def tiny_config(extra: Sequence[str] = ()) -> Any:
    from zerosearch.training.config import load_train_config

    return load_train_config(CONFIG, [*OVERRIDES, *extra])


def build(cfg: Any, out: Path) -> tuple[Any, RecordingEngine]:
    """A GRPOTrainer over the world's first 8 train questions, the real simulated engine (recorded)."""
    from zerosearch.engines import build_engine
    from zerosearch.integrations.common import load_records
    from zerosearch.integrations.trl import build_trainer
    from zerosearch.training.trainer import engine_config

    records, world = load_records("world")
    engine = RecordingEngine(build_engine(engine_config(cfg.engine, world)))
    return build_trainer(cfg, out, engine=engine, records=records[:8], rollout_cls=MixedRollout), engine


def sampled_mask(prompt_ids: list[int], completion: list[int], calls: list[Any]) -> list[int]:
    """1 where the completion holds ids a backend returned for this row's context, else 0: rebuilt from
    the backend's own record, independently of the rollout's info mask."""
    full = list(prompt_ids) + list(completion)
    P = len(prompt_ids)
    mask = [0] * len(completion)
    for prompts, outs in calls:
        for p, o in zip(prompts, outs):
            k = len(p) - P
            ids = list(o.token_ids)
            if k >= 0 and full[: len(p)] == p and completion[k: k + len(ids)] == ids:
                for j in range(k, k + len(ids)):
                    mask[j] = 1
    return mask
