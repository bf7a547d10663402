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

    order = length_sorted(torch.arange(batch["response_mask"].shape[0]), row_lengths(batch))
    return _in_micro_batches(batch, order, micro_batch,
                             lambda sub: compute_logprobs(model, sub, temperature, sub["input_ids"].shape[0]))


def _in_micro_batches(batch: dict[str, Tensor], order: Tensor, micro_batch: int, logprobs: Any) -> Tensor:
    """logprobs(micro-batch) over consecutive slices of `order`, each trimmed to its own width, written
    back to a [B, R] float32 tensor (0 on padding) in the batch's own row order."""
    out = torch.zeros(batch["response_mask"].shape)
    for s in range(0, len(order), micro_batch):
        idx = order[s: s + micro_batch]
        sub, r = trim_columns({k: v[idx] for k, v in batch.items()})
        out[idx, :r] = logprobs(sub).float().cpu()
    return out


# --- a GRPO group's prompt, computed once -------------------------------------------------------------
#
# The n samples of a GRPO group share their prompt (~160 of ~340 tokens per row in the demo), and a
# plain forward computes it n times, with its backward. Causal attention makes the prompt's keys and
# values independent of what follows, so each distinct prompt can run once, its KV be copied to its rows
# (an index: the backward adds the rows' gradients into the one prompt pass), and only the responses run
# on top. Same log-probs and gradients (float rounding aside): tests/test_packing.py checks in float64.


def prompt_sorted(idx: Tensor, batch: dict[str, Tensor]) -> Tensor:
    """`idx` reordered so rows with the same prompt are adjacent (a group lands in one micro-batch),
    the longest group first, longest row first within it."""
    P = batch["input_ids"].shape[1] - batch["response_mask"].shape[1]
    key = {}
    for i in idx.tolist():
        key.setdefault(_prompt(batch, i, P), []).append(i)
    lengths = row_lengths(batch)
    groups = sorted(key.values(), key=lambda rows: -int(max(lengths[r] for r in rows)))
    return torch.tensor([r for rows in groups for r in sorted(rows, key=lambda r: -int(lengths[r]))], dtype=idx.dtype)


def _prompt(batch: dict[str, Tensor], row: int, P: int) -> tuple[int, ...]:
    real = batch["attention_mask"][row, :P].bool()
    return tuple(batch["input_ids"][row, :P][real].tolist())


def shared_prompt_logprobs(model: Any, batch: dict[str, Tensor], temperature: float = 1.0, grad: bool = False,
                           with_entropy: bool = False) -> Tensor | tuple[Tensor, Tensor]:
    """`rollout.compute_logprobs` of one micro-batch, each distinct prompt computed once (see above):
    [B, R] float32 log-probs (and entropies), 0 on padding.

        1. the distinct prompts, left-padded, run once with their KV kept; the last position's logits
           predict response token 0
        2. each row gets its prompt's KV (index_select), and its response runs on top, positions
           continuing from its prompt's length; position j's logits predict response token j + 1
    """
    from transformers import DynamicCache

    from zerosearch.algorithms.losses import entropy_from_logits, logprobs_from_logits
    from zerosearch.prefix_cache import cache_kwarg, left_pad, output_cache

    device = next(model.parameters()).device
    B, R = batch["response_mask"].shape
    P = batch["input_ids"].shape[1] - R
    prompts, which = [], []
    seen: dict[tuple[int, ...], int] = {}
    for b in range(B):
        p = _prompt(batch, b, P)
        which.append(seen.setdefault(p, len(seen)))
        if len(prompts) < len(seen):
            prompts.append(list(p))
    ids_u, mask_u = left_pad(prompts, 0)
    rows = torch.tensor(which, device=device)
    resp = batch["response_mask"].to(device)
    with torch.set_grad_enabled(grad):
        pre = model(input_ids=ids_u.to(device), attention_mask=mask_u.to(device),
                    position_ids=(mask_u.cumsum(-1) - 1).clamp(min=0).to(device), use_cache=True, logits_to_keep=1)
        cache = DynamicCache([(layer.keys.index_select(0, rows), layer.values.index_select(0, rows))
                              for layer in output_cache(pre).layers])
        mask = torch.cat([mask_u.to(device).index_select(0, rows), resp], dim=1)
        start = mask_u.sum(1).to(device).index_select(0, rows)
        out = model(input_ids=batch["input_ids"][:, P:].to(device), attention_mask=mask, **{cache_kwarg(): cache},
                    position_ids=start[:, None] + torch.arange(R, device=device), use_cache=True)
        logits = torch.cat([pre.logits[:, -1:].index_select(0, rows), out.logits[:, :-1]], dim=1).float() / temperature
        logp = logprobs_from_logits(logits, batch["input_ids"][:, P:].to(device)) * resp
        return (logp, entropy_from_logits(logits) * resp) if with_entropy else logp


def logprobs_by_prompt(model: Any, batch: dict[str, Tensor], temperature: float = 1.0,
                       micro_batch: int = 8) -> Tensor:
    """`logprobs_by_length` with each micro-batch's distinct prompts computed once: micro-batches of
    whole groups (`prompt_sorted`), trimmed. The same [B, R] tensor, 0 on padding, in the batch's order."""
    order = prompt_sorted(torch.arange(batch["response_mask"].shape[0]), batch)
    return _in_micro_batches(batch, order, micro_batch, lambda sub: shared_prompt_logprobs(model, sub, temperature))
