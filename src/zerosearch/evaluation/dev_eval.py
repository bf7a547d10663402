"""The in-training dev evaluation: which engine it may use, and the greedy rollout of the dev batch.

A dev score is only worth logging if the documents behind it could not have been written by an engine
that knows the answer. So the dev engine is real or answer-blind, never the gold-aware training
simulator, and every request reaches it through `eval.AnswerBlind` (the same wrapper, and the same
refusal, as `zerosearch eval`): stripped to (query, k, row id), so nothing attached by the rollout (the
question, the gold answers, a noise probability) can get through. When `eval_engine` is unset:

1. the training engine itself, if it is a real engine (a simulator, answer-blind or `self`, is never
   shared: its generator's seed counter would move with every dev search);
2. else BM25 over the synthetic world's corpus, when the dev data is `world`;
3. else the training engine's settings with `answer_blind: true` (the same simulator, told nothing).

A simulator's dev engine is its own instance (cases 2 and 3), so evaluating draws nothing from the
training engine's RNG or seed counter and `eval_every` cannot change what training sees.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from zerosearch.data.qa import QARecord
from zerosearch.engines import EngineConfig, SearchEngine, build_engine
from zerosearch.evaluation.eval import AnswerBlind
from zerosearch.agent.rollout import RolloutConfig, rollout


def dev_engine_config(train_engine: dict[str, Any], eval_engine: dict[str, Any] | None, dev_spec: str | None,
                      train_is_simulator: bool) -> EngineConfig | None:
    """The dev engine's config, or None to reuse the (real) training engine."""
    if eval_engine is not None:
        return EngineConfig.from_dict(eval_engine, source="eval_engine")
    if not train_is_simulator:
        return None
    if dev_spec == "world":
        return EngineConfig(name="bm25", corpus="world", k=int(train_engine.get("k", 5)))
    return EngineConfig.from_dict({**train_engine, "answer_blind": True}, source="engine")


def dev_engine(train_engine: SearchEngine, cfg: EngineConfig | None, world_dir: Path | None,
               override: SearchEngine | None = None) -> tuple[AnswerBlind, SearchEngine | None]:
    """(the dev engine behind AnswerBlind, the engine this call built and the caller must close, if any).
    A gold-seeing engine is refused with AnswerBlind's ValueError, prefixed with where it came from."""
    owned = None
    if override is not None:
        inner, where = override, "eval_engine"
    elif cfg is None:
        inner, where = train_engine, "engine"
    else:
        if cfg.corpus == "world" and world_dir is None:
            raise ValueError("eval_engine corpus 'world' needs data.train or data.dev to be 'world'")
        inner = owned = build_engine(cfg.on_world(world_dir))
        where = "eval_engine"
    try:
        return AnswerBlind(inner), owned
    except ValueError as e:
        if owned is not None:
            owned.close()
        raise ValueError(f"{where} (the dev batch's engine): {e}. Dev metrics from an engine that knows the "
                         "answers would be meaningless; set eval_engine to a real engine (e.g. {name: bm25, "
                         "corpus: world}) or add answer_blind: true") from None


def evaluate(records: list[QARecord], backend: Any, tokenizer: Any, engine: SearchEngine,
             rollout_cfg: RolloutConfig) -> dict[str, float]:
    """Greedy rollouts of the fixed dev batch (a training monitor; `zerosearch eval` is the benchmark)."""
    if not records:
        return {}
    cfg = dataclasses.replace(rollout_cfg, temperature=0.0, n=1)
    ro = rollout(records, backend, tokenizer, engine, cfg, noise_prob=None, seed=0)
    mean = lambda key: sum(t.metrics[key] for t in ro) / len(ro)
    return {"dev/reward": ro.stats.mean_reward, "dev/em": mean("em"), "dev/f1": mean("f1"),
            "dev/searches": ro.stats.mean_searches, "dev/answered_rate": ro.stats.answered_rate}
