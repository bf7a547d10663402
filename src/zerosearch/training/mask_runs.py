"""The loss mask of one trajectory as text runs, the form samples.jsonl records it in (`loss_mask`).

The trainer's loss mask is a 0/1 row over the response tokens (`batch.mask` of the update: the info mask,
or every response token under the `train.loss_mask: false` ablation). The viewer has no tokenizer, so the
mask travels as text: `[[text, 1], [text, 0], ...]`, one entry per run of equal mask values, 1 = trained
on, 0 = masked (inserted by the rollout: information blocks, the corrective and forced-answer messages).
The runs cut the decoded response at the runs' token boundaries, so they always spell the response
exactly; the viewer shades them as recorded and derives nothing from the text.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence


def loss_mask_runs(ids: Sequence[int], mask: Sequence[int], decode: Callable[[list[int]], str]) -> list[list]:
    """[[text, 0 | 1], ...] for each maximal run of equal mask values over `ids`; the texts join to decode(ids).

    A run boundary is placed where decode(ids[:boundary]) stops agreeing with decode(ids): the same place for
    tokenizers whose decoding is prefix-stable, and just before a character whose bytes a boundary splits."""
    if len(ids) != len(mask):
        raise ValueError(f"{len(ids)} token ids but a mask of {len(mask)}")
    ids = list(ids)
    ends = [i for i in range(1, len(ids) + 1) if i == len(ids) or bool(mask[i]) != bool(mask[i - 1])]
    full = decode(ids) if ids else ""
    runs: list[list] = []
    start = 0
    for k, end in enumerate(ends):
        cut = len(full) if end == len(ids) else max(start, len(os.path.commonprefix([decode(ids[:end]), full])))
        runs.append([full[start:cut], int(bool(mask[end - 1]))])
        start = cut
    return runs
