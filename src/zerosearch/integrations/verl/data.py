"""Any zerosearch QA source -> the parquet veRL's `RLHFDataset` reads. Needs pyarrow only, not veRL.

One row per question:
- `data_source`, `prompt` (the search-agent instruction as one user message: what an instruct model's
  chat template renders; the `zerosearch_agent` loop rebuilds the same prompt from the question, raw for
  base models), `ability`, `agent_name` (veRL picks the agent loop per row from this column);
- `reward_model.ground_truth.target`: the gold answers (Search-R1's layout, read by `compute_score`);
- `extra_info`: `index` (row number: veRL's trajectory index), `id`, `question`, `golden_answers`,
  `split`, `agent_name`, and `tools_kwargs.search.create_kwargs` (question, gold answers, id) for the
  drop-in search tool under veRL's generic tool agent.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from zerosearch.data.qa import QARecord
from zerosearch.integrations.common import qa_rows
from zerosearch.prompts import search_agent_prompt

AGENT_NAME = "zerosearch_agent"  # = agent_loop.AGENT_NAME (this module must not import veRL)


def verl_row(qa: dict[str, Any], index: int, *, split: str = "train", agent_name: str = AGENT_NAME,
             tool_name: str = "search") -> dict[str, Any]:
    """One veRL row from one `zerosearch.integrations.common.qa_rows` row."""
    golds = [str(a) for a in qa["golden_answers"]]
    create = {"id": qa["id"], "question": qa["question"], "ground_truth": {"target": golds}, "golden_answers": golds,
              "data_source": qa["data_source"]}
    return {
        "data_source": qa["data_source"],
        "prompt": [{"role": "user", "content": search_agent_prompt(qa["question"], chat=False)}],
        "ability": "search",
        "agent_name": agent_name,
        "reward_model": {"style": "rule", "ground_truth": {"target": golds}},
        "extra_info": {"index": index, "id": qa["id"], "question": qa["question"], "golden_answers": golds,
                       "split": split, "agent_name": agent_name, "need_tools_kwargs": True,
                       "tools_kwargs": {tool_name: {"create_kwargs": create}}},
    }


def verl_rows(records: Sequence[QARecord], **kw: Any) -> list[dict[str, Any]]:
    ids = [r.id for r in records]
    dup = next((i for i in ids if ids.count(i) > 1), None) if len(set(ids)) != len(ids) else None
    if dup is not None:
        raise ValueError(f"QA rows share the id {dup!r}: give each row a unique id (the engine and veRL's "
                         "grouping key on it)")
    return [verl_row(r, i, **kw) for i, r in enumerate(qa_rows(records))]


def write_verl_parquet(path: str | Path, rows: Iterable[dict[str, Any]]) -> int:
    """Write rows atomically (a crash leaves no half-written parquet); returns the row count."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from zerosearch.io import atomic_path

    rows = list(rows)
    if not rows:
        raise ValueError("no rows to export")
    table = pa.Table.from_pylist(rows)
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)
    return len(rows)
