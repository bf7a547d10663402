"""Step 3 of a training step: a finished rollout scored for the update, as a `RolloutBatch` of its rewards,
the loss mask, the old (and reference) log-probs and the critic's values, all from no-grad passes.

Its own module because this is where the paper's loss mask is chosen (retrieved tokens are never
trained on unless the ablation asks for it) and where the speed paths (zerosearch.training.packing, the
sampler's own log-probs) must give the same numbers as the plain forward.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Any

import torch
from torch import Tensor

from zerosearch.agent.rollout import Trajectory, compute_logprobs
from zerosearch.algorithms.batch import RolloutBatch
from zerosearch.training.config import OptimSection
from zerosearch.training.packing import logprobs_by_length, logprobs_by_prompt
from zerosearch.training.update import Amp, rows


def sampling_temperature(temperature: float) -> float:
    """The temperature log-probs are scored at: the rollout's, so they are those of the sampler.
    Greedy rollouts (T = 0) are scored at T = 1: there is no sampling distribution to match."""
    return temperature if temperature > 0 else 1.0


@contextmanager
def reference_model(policy: Any, ref: Any) -> Iterator[Any]:
    """The frozen reference model: a copy of the initial policy, or the LoRA base (adapter off)."""
    if ref is not None:
        yield ref
    else:
        with policy.disable_adapter():
            yield policy


def score_rollout(ro: Sequence[Trajectory], batch: dict[str, Tensor], *, policy: Any, optim: OptimSection,
                  loss_mask: bool, temperature: float,
                  reference: Callable[[], AbstractContextManager[Any]] | None = None,
                  critic: torch.nn.Module | None = None, amp: Amp = nullcontext) -> RolloutBatch:
    """`batch` is `collate(ro)`. `loss_mask` False is the ablation that trains on retrieved tokens too;
    `reference` (yielding the reference model) only when the algorithm has a KL term; `amp` the context
    of every forward pass (bf16 autocast or nothing)."""
    o, mb, T = optim, optim.micro_batch_size, temperature
    logprobs = logprobs_by_prompt if o.share_prompts else logprobs_by_length if o.sort_by_length else compute_logprobs
    # THE LOSS MASK: the info mask (policy tokens only) unless the ablation trains on retrieved tokens.
    mask = batch["info_mask"] if loss_mask else batch["response_mask"]
    keep = mask if o.loss_token_logits else None  # log-probs are only ever used under the loss mask
    with amp():
        policy.eval()
        # The sampler's log-probs are those of the policy tokens only: reusable when only those are trained.
        if o.reuse_sampler_logprobs and loss_mask and "sampler_logprobs" in batch:
            old_logp = batch["sampler_logprobs"] * batch["info_mask"]
        else:
            old_logp = logprobs(policy, batch, T, mb, keep=keep)
        ref_logp = None
        if reference is not None:
            with reference() as ref:
                ref_logp = logprobs(ref, batch, T, mb, keep=keep)
        values = None
        if critic is not None:
            critic.eval()  # rollout values: no dropout, like the policy's old log-probs
            with torch.no_grad():
                values = torch.cat([critic(rows(batch, slice(s, s + mb))) for s in range(0, len(ro), mb)]).cpu()
        return RolloutBatch(scores=batch["rewards"], mask=mask.float(), old_logp=old_logp.cpu(),
                            ref_logp=None if ref_logp is None else ref_logp.cpu(), values=values,
                            group_ids=[t.group_id for t in ro])


def nonfinite_logprobs(rb: RolloutBatch) -> int:
    """Old and reference log-probs that are inf or nan: a step with any is not trained on."""
    n = int((~torch.isfinite(rb.old_logp)).sum())
    if rb.ref_logp is not None:
        n += int((~torch.isfinite(rb.ref_logp)).sum())
    return n
