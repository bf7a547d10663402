"""Simulation tuning: turn an LLM into a search simulator for your engine and domain.

    collect    the prompted policy searches a *real* engine; each trajectory is labelled by its answer
    build_sft  (query, documents) pairs -> SFT examples: useful from correct trajectories, noisy from wrong
    (sft)      fine-tune the simulation LLM on them (zerosearch.training.sft, loss on the documents only)
    judge      measure the result: answer-in-docs and reader accuracy, useful vs noisy vs the real engine
"""
