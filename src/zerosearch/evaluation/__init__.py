"""Evaluation: exact match as the search agent and as the paper's baselines (`eval`), the protocol that
makes two numbers comparable (`protocol`), results by hops and behaviour (`behaviour`), paired statistics
(`stats`), the in-training dev evaluation (`dev_eval`) and the sim-to-real gap (`gap`)."""
