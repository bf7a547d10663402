"""What every integration with an outside RL engine (TRL, veRL) shares: data rows, rewards, the
curriculum's p(i) and the rollout's metrics. Pure Python on zerosearch's own pieces; no TRL/veRL import.

- `load_records` / `qa_rows`: any zerosearch QA source (`world[:split]`, JSONL, JSON, parquet, several
  comma-separated) to plain rows `{id, question, golden_answers, data_source}`: the columns
  `zerosearch.agent.rollout.rollout` needs to rebuild each row's `QARecord` (the engine gets each query with
  its own row's id, question and gold answers).
- `policy_text` / `score_policy`: the reward is read from the policy's OWN tokens only (info mask 1),
  exactly as `zerosearch.agent.rollout` scores a trajectory: each run of mask-1 tokens is one turn, decoded on
  its own and joined, so a document or the instruction that contains `<answer>` tags is never scored.
- `noise_schedule` / `noise_prob`: the paper's curriculum p(i) over the run's total steps, or a fixed p,
  with zerosearch's trainer's step convention (the i-th update, 1-based, sees p(i)).
- `rollout_metrics`: a finished `Rollout` (plus the engine's counters) as one flat {name: float} dict.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from zerosearch.training.curriculum import Curriculum, FixedSchedule, NoiseSchedule
from zerosearch.data.qa import QARecord, resolve_qa
from zerosearch.reward import answer_metrics, extract_answer, f1_reward, is_valid_format

# The columns a row carries into the rollout (and, for TRL/veRL, into the reward functions).
QA_COLUMNS = ("id", "question", "golden_answers", "data_source")


# --- data ----------------------------------------------------------------------------------------------


def load_records(spec: str, *, world: Mapping[str, Any] | None = None, world_dir: str | Path | None = None,
                 split: str = "train", limit: int | None = None, seed: int = 0) -> tuple[list[QARecord], Path | None]:
    """Records from `spec`: "world" (its `split`), "world:dev", a JSONL/JSON/parquet file, or several
    comma-separated; and the world folder when the world was used (engines with `corpus: world` need it).

    `world` holds zerosearch.data.world.WorldConfig fields (TrainConfig's `data.world`); they only matter for
    "world" specs. Bad rows raise zerosearch.data.qa.DataError naming file, row and field.
    """
    return resolve_qa(spec, limit=limit, seed=seed, world_dir=None if world_dir is None else str(world_dir),
                      default_split=split, world_config=world or None)


def qa_rows(records: Sequence[QARecord]) -> list[dict[str, Any]]:
    """One plain row per record with QA_COLUMNS (the record's `extra` fields are not carried: an
    outside trainer's dataset must hold one schema)."""
    return [{"id": r.id, "question": r.question, "golden_answers": list(r.golden_answers),
             "data_source": r.data_source} for r in records]


def record_of(row: Mapping[str, Any]) -> QARecord:
    """The QARecord back from a row (the inverse of qa_rows); a missing column is a clear error."""
    missing = [c for c in QA_COLUMNS if c not in row]
    if missing:
        raise KeyError(f"a rollout row needs the columns {QA_COLUMNS}; this one lacks {missing} "
                       "(build the dataset with zerosearch.integrations.common.qa_rows)")
    return QARecord(id=str(row["id"]), question=str(row["question"]), golden_answers=list(row["golden_answers"]),
                    data_source=str(row["data_source"]))


# --- reward ----------------------------------------------------------------------------------------------


def policy_text(token_ids: Sequence[int], mask: Sequence[int], tokenizer: Any) -> str:
    """What the policy itself wrote: every maximal run of mask-1 tokens (one turn each: the rollout
    inserts text between turns) decoded on its own, joined. Equals the text `zerosearch.agent.rollout` scores."""
    if len(token_ids) != len(mask):
        raise ValueError(f"token_ids ({len(token_ids)}) and mask ({len(mask)}) differ in length")
    runs: list[list[int]] = []
    prev = 0
    for tok, m in zip(token_ids, mask):
        if m:
            if not prev:
                runs.append([])
            runs[-1].append(int(tok))
        prev = m
    return "".join(tokenizer.decode(r, skip_special_tokens=False) for r in runs)


def score_policy(text: str, golden_answers: Sequence[str], *, format_weight: float = 0.0) -> dict[str, float]:
    """The reward and the metrics of one trajectory's policy text: `reward` (zerosearch.reward.f1_reward,
    the training signal), `em`, `cover_em`, `f1` (of the extracted answer), `answered`, `valid_format`."""
    answer = extract_answer(text)
    return {"reward": f1_reward(text, golden_answers, format_weight=format_weight),
            **answer_metrics(answer, golden_answers), "answered": float(answer is not None),
            "valid_format": float(is_valid_format(text))}


# --- curriculum --------------------------------------------------------------------------------------------


def noise_schedule(total_steps: int, *, p_start: float = 0.0, p_end: float = 0.5, base: float = 4.0,
                   fixed: float | None = None) -> NoiseSchedule:
    """The paper's curriculum over `total_steps` updates (TrainConfig's `curriculum` section fields), or a
    constant p when `fixed` is set."""
    return FixedSchedule(fixed) if fixed is not None else Curriculum(p_start, p_end, total_steps, base)


def noise_prob(schedule: NoiseSchedule, completed_steps: int) -> float:
    """p for the update that follows `completed_steps` finished ones (TRL's `state.global_step`, veRL's
    `global_steps - 1`): zerosearch's trainer numbers its updates 1..steps and step i uses p(i), so the
    first update sees p(1) and the last p(total) = p_end."""
    if completed_steps < 0:
        raise ValueError(f"completed_steps must be >= 0, got {completed_steps}")
    return schedule(completed_steps + 1)


# --- metrics -----------------------------------------------------------------------------------------------


def rollout_metrics(ro: Any, *, noise_prob: float | None = None, engine_stats: Mapping[str, Any] | None = None,
                    prefix: str = "zerosearch/") -> dict[str, float]:
    """A `zerosearch.agent.rollout.Rollout` as one flat dict of floats (prefixed): turns, searches, action
    validity, answered rate, EM/cover-EM/F1, token counts, ends, truncation, useful/noisy draws, engine
    fallbacks, timings, and the engine's own counters (leak_flagged, fallbacks, ... from engine.stats(),
    cumulative since the engine was built) under `engine/`."""
    s = ro.stats
    n = max(len(ro), 1)
    out: dict[str, float] = {
        "trajectories": float(s.trajectories), "turns": s.mean_turns, "searches": s.mean_searches,
        "valid_action_rate": s.valid_action_rate, "answered_rate": s.answered_rate, "reward": s.mean_reward,
        "em": sum(t.metrics.get("em", 0.0) for t in ro) / n,
        "cover_em": sum(t.metrics.get("cover_em", 0.0) for t in ro) / n,
        "f1": sum(t.metrics.get("f1", 0.0) for t in ro) / n,
        "response_tokens": s.mean_response_tokens, "policy_tokens": s.mean_policy_tokens,
        "generated_tokens": float(s.generated_tokens), "useful_draws": float(s.draws.get("useful", 0)),
        "noisy_draws": float(s.draws.get("noisy", 0)), "engine_fallbacks": float(s.engine_fallbacks),
        "truncated_tokens": float(sum(v for k, v in s.truncation.items() if k != "obs_blocks")),
        "time_generate": s.gen_seconds, "time_engine": s.engine_seconds, "time_rollout": s.seconds,
        "tokens_per_s": s.tokens_per_s,
    }
    for k, v in s.truncation.items():
        out[f"truncation/{k}"] = float(v)
    for k in ("answer", "no_answer", "context", "eos"):
        out[f"end/{k}"] = float(s.ends.get(k, 0)) / n
    if noise_prob is not None:
        out["noise_prob"] = float(noise_prob)
    for k, v in (engine_stats or {}).items():
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            out[f"engine/{k}"] = float(v)
    return {f"{prefix}{k}": v for k, v in out.items()}


def mean_metrics(dicts: Sequence[Mapping[str, float]]) -> dict[str, float]:
    """Key-wise mean of several metric dicts (e.g. the rollouts between two logging steps); a key missing
    from some dicts is averaged over those that have it."""
    sums: dict[str, float] = {}
    counts: dict[str, int] = {}
    for d in dicts:
        for k, v in d.items():
            sums[k] = sums.get(k, 0.0) + float(v)
            counts[k] = counts.get(k, 0) + 1
    return {k: sums[k] / counts[k] for k in sums}
