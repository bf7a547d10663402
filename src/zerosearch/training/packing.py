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
                       micro_batch: int = 8, keep: Tensor | None = None) -> Tensor:
    """`rollout.compute_logprobs` (no grad) over length-sorted, trimmed micro-batches: the same [B, R]
    tensor, 0 on padding (and outside `keep`, when given), in the batch's own row order."""
    from zerosearch.agent.rollout import compute_logprobs

    order = length_sorted(torch.arange(batch["response_mask"].shape[0]), row_lengths(batch))
    return _in_micro_batches(batch, order, micro_batch, keep,
                             lambda sub, k: compute_logprobs(model, sub, temperature, sub["input_ids"].shape[0], keep=k))


def _in_micro_batches(batch: dict[str, Tensor], order: Tensor, micro_batch: int, keep: Tensor | None,
                      logprobs: Any) -> Tensor:
    """logprobs(micro-batch, its rows of keep) over consecutive slices of `order`, each trimmed to its own
    width, written back to a [B, R] float32 tensor (0 on padding) in the batch's own row order."""
    out = torch.zeros(batch["response_mask"].shape)
    for s in range(0, len(order), micro_batch):
        idx = order[s: s + micro_batch]
        sub, r = trim_columns({k: v[idx] for k, v in batch.items()})
        out[idx, :r] = logprobs(sub, None if keep is None else keep[idx, :r]).float().cpu()
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
                           with_entropy: bool = False, keep: Tensor | None = None,
                           by_row: bool | None = None) -> Tensor | tuple[Tensor, Tensor]:
    """`rollout.compute_logprobs` of one micro-batch, each distinct prompt computed once (see above):
    [B, R] float32 log-probs (and entropies), 0 on padding; with `keep` [B, R], the head runs at those
    positions only (zerosearch.agent.head) and the rest are 0.

        1. the distinct prompts, left-padded, run once with their KV kept; the last position's output
           predicts response token 0
        2. each row gets its prompt's KV, and its response runs on top, positions continuing from its
           prompt's length; position j's output predicts response token j + 1

    Step 2 runs each row alone, unpadded (`by_row`; default: on a CPU), or the rows together, padded to the
    longest response (default on a GPU). A CPU multiplies one row's ~200 tokens about as efficiently as a
    batch's, so the padding (~25% of the tokens in the demo) is pure waste there; a GPU wants the batch.
    """
    from zerosearch.agent.head import masked_logprobs, outputs_for
    from zerosearch.agent.prefix_cache import left_pad, output_cache

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
    ids_u, mask_u = ids_u.to(device), mask_u.to(device)
    resp = batch["response_mask"].to(device)
    labels = batch["input_ids"][:, P:].to(device)
    net, out_of, head = outputs_for(model, keep)  # the decoder's hidden states when only `keep` needs the head
    by_row = device.type == "cpu" if by_row is None else by_row
    with torch.set_grad_enabled(grad):
        pre = net(input_ids=ids_u, attention_mask=mask_u, position_ids=(mask_u.cumsum(-1) - 1).clamp(min=0),
                  use_cache=True, **({"logits_to_keep": 1} if head is None else {}))
        responses = _responses_by_row if by_row else _responses_batched
        rest = responses(net, out_of, output_cache(pre), mask_u, which, labels, resp)  # [B, R-1, *]
        # position t predicts response token t: the prompt's last position, then the response's own
        h = torch.cat([out_of(pre)[:, -1:].index_select(0, torch.tensor(which, device=device)), rest], dim=1)
        m = resp if keep is None else resp * keep.to(device)
        return masked_logprobs(h, labels, m, temperature, with_entropy, head)


def _responses_batched(net: Any, out_of: Any, cache_u: Any, mask_u: Tensor, which: list[int], labels: Tensor,
                       resp: Tensor) -> Tensor:
    """Every row's response on its prompt's KV (index_select: the backward sums the rows' gradients into
    the one prompt pass), padded to R: the outputs at positions 0..R-2, [B, R-1, *]."""
    from transformers import DynamicCache

    from zerosearch.agent.prefix_cache import cache_kwarg

    rows = torch.tensor(which, device=labels.device)
    cache = DynamicCache([(layer.keys.index_select(0, rows), layer.values.index_select(0, rows))
                          for layer in cache_u.layers])
    mask = torch.cat([mask_u.index_select(0, rows), resp], dim=1)
    start = mask_u.sum(1).index_select(0, rows)
    out = net(input_ids=labels, attention_mask=mask, **{cache_kwarg(): cache}, use_cache=True,
              position_ids=start[:, None] + torch.arange(labels.shape[1], device=labels.device))
    return out_of(out)[:, :-1]


def _responses_by_row(net: Any, out_of: Any, cache_u: Any, mask_u: Tensor, which: list[int], labels: Tensor,
                      resp: Tensor) -> Tensor:
    """`_responses_batched` one row at a time, each over its own real tokens only; the outputs are
    zero-padded back to [B, R-1, *] (padding positions are masked out downstream)."""
    out = []
    for b, u in enumerate(which):
        r = max(int(resp[b].sum()), 1)  # an empty row runs one (masked) token; 1 token needs no output here
        o = _responses_batched(net, out_of, cache_u, mask_u, [u], labels[b: b + 1, :r], resp[b: b + 1, :r])
        out.append(torch.nn.functional.pad(o, (0, 0, 0, labels.shape[1] - r)))
    return torch.cat(out)


def logprobs_by_prompt(model: Any, batch: dict[str, Tensor], temperature: float = 1.0,
                       micro_batch: int = 8, keep: Tensor | None = None) -> Tensor:
    """`logprobs_by_length` with each micro-batch's distinct prompts computed once: micro-batches of
    whole groups (`prompt_sorted`), trimmed. The same [B, R] tensor, 0 on padding, in the batch's order."""
    order = prompt_sorted(torch.arange(batch["response_mask"].shape[0]), batch)
    return _in_micro_batches(batch, order, micro_batch, keep,
                             lambda sub, k: shared_prompt_logprobs(model, sub, temperature, keep=k))
