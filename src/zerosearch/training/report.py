"""Step 6 of a training step, its record: the metrics row (metrics.jsonl, TensorBoard) and the sample rows
(samples.jsonl) of a step, trained on or skipped.

Its own module because other tools read these rows by key: the trajectory viewer (zerosearch.viewer) the
samples, the collapse monitors, `plot_run` and bench/ the metrics. The keys, and what each one means,
live here rather than in the loop.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import Tensor

from zerosearch.agent.rollout import Rollout, Trajectory
from zerosearch.algorithms.advantages import masked_mean
from zerosearch.algorithms.batch import RolloutBatch
from zerosearch.algorithms.kl import kl_penalty
from zerosearch.training.mask_runs import loss_mask_runs


def mean(xs: Any) -> float:
    xs = list(xs)
    return sum(xs) / len(xs) if xs else 0.0


def sample_row(t: Any, tok: Any = None, mask: Tensor | None = None, advantage: float | None = None) -> dict[str, Any]:
    """One trajectory for samples.jsonl, with every search's documents and their leak-guard flags
    (`meta.leak`, `meta.leak_reason`, `meta.leak_replaced`, `meta.fallback`) as the engine returned them;
    for a step trained on, also the loss mask the update used (`loss_mask`: text runs, see
    zerosearch.training.mask_runs) and the trajectory's advantage (mean over its trained tokens)."""
    row = {"question": t.question, "golden_answers": t.golden_answers, "response": t.response,
           "answer": t.answer, "reward": t.reward, "turns": t.turns, "searches": t.searches,
           "queries": t.queries, "draws": t.draws, "end": t.end, "group": t.group_id,
           "documents": [[d.to_dict() for d in docs] for docs in t.documents]}
    if tok is not None and mask is not None:
        row["loss_mask"] = loss_mask_runs(t.response_ids, [int(m) for m in mask.tolist()],
                                          lambda ids: tok.decode(ids, skip_special_tokens=False))
    if advantage is not None:
        row["advantage"] = advantage
    return row


def trained_samples(ro: Sequence[Trajectory], tok: Any, rb: RolloutBatch, n: int) -> list[dict[str, Any]]:
    """The first `n` trajectories of a step trained on, with the loss mask this update used (rb.mask) and
    each one's advantage."""
    assert rb.advantages is not None, "the samples of a trained step carry its advantages"
    return [sample_row(t, tok, rb.mask[i, :len(t.response_ids)], float(masked_mean(rb.advantages[i], rb.mask[i])))
            for i, t in enumerate(ro[:n])]


def step_metrics(ro: Rollout, rb: RolloutBatch, *, noise_prob: float, failed: int, skipped_total: int,
                 update: dict[str, float], counters: dict[str, Any], t_rollout: float, t_update: float,
                 t_step: float) -> dict[str, Any]:
    """The metrics row of a step trained on: the rollout's statistics, the update's losses (`update`), the
    engine's counters (per-step deltas) and, with a reference model, the k3 KL to it. `t_rollout` is the
    rollout's wall time, engine time included (time_rollout is the policy's part)."""
    s = ro.stats
    rewards = rb.scores
    metrics = {
        "reward": s.mean_reward, "reward_std": float(rewards.std()) if len(rewards) > 1 else 0.0,
        "f1": mean(t.metrics["f1"] for t in ro), "em": mean(t.metrics["em"] for t in ro),
        "response_tokens": s.mean_response_tokens, "policy_tokens": s.mean_policy_tokens,
        "turns": s.mean_turns, "searches": s.mean_searches, "valid_action_rate": s.valid_action_rate,
        "answered_rate": s.answered_rate, "noise_prob": noise_prob,
        "noisy_draws": s.draws.get("noisy", 0), "useful_draws": s.draws.get("useful", 0),
        "engine_fallbacks": s.engine_fallbacks, "truncated_tokens": sum(s.truncation.values()),
        "tokens_per_s": s.tokens_per_s, "time_rollout": t_rollout - s.engine_seconds,
        "time_engine": s.engine_seconds, "time_update": t_update, "time_step": t_step,
        "failed_searches": failed, "skipped": 0, "skipped_total": skipped_total, "nonfinite": 0,
        **update, **counters,
    }
    if rb.ref_logp is not None:
        metrics["kl"] = float(masked_mean(kl_penalty(rb.old_logp, rb.ref_logp, "k3"), rb.mask))
    return metrics


def skip_metrics(ro: Rollout | None, *, noise_prob: float, why: str, failed: int, searches: int,
                 skipped_total: int, nonfinite: int, lr: float, counters: dict[str, Any]) -> dict[str, Any]:
    """The metrics row of a step not trained on: why (`skip_reason`), and what its rollout did, if it ran."""
    out: dict[str, Any] = {"noise_prob": noise_prob, "failed_searches": failed, "searches_total": searches,
                           "skipped": 1, "skipped_total": skipped_total, "skip_reason": why,
                           "nonfinite": nonfinite, "lr": lr, **counters}
    if ro is not None:
        out.update(reward=ro.stats.mean_reward, searches=ro.stats.mean_searches,
                   response_tokens=ro.stats.mean_response_tokens, engine_fallbacks=ro.stats.engine_fallbacks)
    return out
