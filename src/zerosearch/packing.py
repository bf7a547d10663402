"""Less padding in the trainer's forward passes: micro-batches of similar length, trimmed to their own width.

`collate` pads every trajectory to the batch's longest prompt (left) and longest response (right). A
micro-batch of rows taken in arbitrary order is as wide as its longest row, so the short rows beside a
long one are mostly padding, computed and thrown away. Sorting the rows by real length before cutting
micro-batches puts rows of similar length together, and trimming each micro-batch to the columns that
are real for at least one of its rows removes the rest.

The results are the same: a row's log-probs do not depend on its neighbours or on padding columns
(masked out of attention; position ids count real tokens only), and the loss of a mini-batch is the
weighted sum of its micro-batches' losses in any grouping. Only float summation order changes.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor


def row_lengths(batch: dict[str, Tensor]) -> Tensor:
    """Real tokens (prompt + response) per row: the attention mask's row sums."""
    return batch["attention_mask"].sum(1)


def length_sorted(idx: Tensor, lengths: Tensor) -> Tensor:
    """`idx` reordered longest first (stable: equal lengths keep their order), so consecutive slices of it
    are micro-batches of similar length. The longest go first so a memory peak shows in the first one."""
    order = torch.sort(lengths[idx], descending=True, stable=True).indices
    return idx[order]


def trim_columns(batch: dict[str, Tensor]) -> tuple[dict[str, Tensor], int]:
    """The batch without the columns that are padding in every row, and r, the response columns kept.

    Full-width tensors ([B, P + R]) lose their leading all-padding prompt columns and trailing all-padding
    response columns; response-width tensors ([B, R]) keep their first r columns; others are unchanged.
    """
    R = batch["response_mask"].shape[1]
    P = batch["input_ids"].shape[1] - R
    r = max(int(batch["response_mask"].sum(1).max()), 1)
    real = batch["attention_mask"][:, :P].sum(0) > 0
    left = int(real.nonzero().min()) if P and bool(real.any()) else P
    out = {}
    for k, v in batch.items():
        if v.dim() == 2 and v.shape[1] == P + R:
            out[k] = v[:, left: P + r]
        elif v.dim() == 2 and v.shape[1] == R:
            out[k] = v[:, :r]
        else:
            out[k] = v
    return out, r


def logprobs_by_length(model: Any, batch: dict[str, Tensor], temperature: float = 1.0,
                       micro_batch: int = 8) -> Tensor:
    """`rollout.compute_logprobs` (no grad) over length-sorted, trimmed micro-batches: the same [B, R]
    tensor, 0 on padding, in the batch's own row order."""
    from zerosearch.rollout import compute_logprobs

    B, R = batch["response_mask"].shape
    order = length_sorted(torch.arange(B), row_lengths(batch))
    out = torch.zeros((B, R))
    for s in range(0, B, micro_batch):
        idx = order[s: s + micro_batch]
        sub, r = trim_columns({k: v[idx] for k, v in batch.items()})
        lp = compute_logprobs(model, sub, temperature, len(idx))
        out[idx, :r] = lp.float().cpu()
    return out
