"""zerosearch inside outside RL engines: `common` (shared by every integration, no extra dependency) and
`trl` (trl.GRPOTrainer; `pip install zerosearch[trl]`). Nothing here is imported by the core package."""
