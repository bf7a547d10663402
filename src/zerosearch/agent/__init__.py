"""The search agent at work, shared by training, evaluation and the integrations: the multi-turn rollout
(`rollout`: think, search, read `<information>`, answer, with the loss mask), where its tokens come from
(`generation`, with the KV reuse of `prefix_cache` and the `precision` of its forward passes) and the
log-probs of the tokens it wrote (`head`)."""
