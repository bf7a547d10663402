"""zerosearch in veRL (`pip install zerosearch[verl]`, veRL >= 0.9.1).

- `agent_loop`: the `zerosearch_agent` agent loop (zerosearch's rollout on veRL's vLLM/SGLang servers),
  and the manager/worker that forward the training step for the curriculum (legacy trainer).
- `reward`: `compute_score` for `reward.custom_reward_function`.
- `tool`: a drop-in for the search tool older veRL shipped, backed by any zerosearch engine.
- `data`: QA sources -> veRL parquet (`zerosearch export --format verl`); needs no veRL.

Nothing is imported here, so `zerosearch export` works without veRL installed.
"""
