"""Training the policy: the typed config (`config`), the cold start (`warmup` on `sft`), the RL loop
(`trainer`: rollout -> reward -> advantages -> update -> log/checkpoint, its units in `scoring`, `update`,
`state` (what a checkpoint carries, resume) and `report` (metrics and sample rows)), the curriculum's noise schedule
(`curriculum`), less padding (`packing`), health checks (`monitors`), metrics, checkpoints and the loss
mask as text (`mask_runs`)."""
