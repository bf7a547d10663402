"""zerosearch: teach LLMs to search with RL, without a real search engine during training.

Importing the package is cheap on purpose: torch and transformers are imported by the modules that
need them, so `zerosearch --help` and the data/reward utilities start instantly.
"""

__version__ = "0.1.0"
