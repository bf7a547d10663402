"""The world's config (every knob, validated), the World it generates, and its file-format constants.

`asdict(WorldConfig(...))` is what world.json records and what `cached_world` hashes into its folder name:
adding, renaming or reordering a field changes every cache key."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

WORLD_FORMAT = 1  # bump whenever generation changes, so ensure_world regenerates worlds made before
DATA_SOURCE = "synthetic_world"
SPLITS = ("train", "dev", "test")
DATA_FILES = ("corpus.jsonl", "train.jsonl", "dev.jsonl", "test.jsonl")


@dataclass
class WorldConfig:
    seed: int = 0
    n_people: int = 1200
    n_places: int = 600
    n_orgs: int = 600
    n_works: int = 600
    n_questions: int = 3000  # an upper bound: a tiny world may have fewer distinct questions
    two_hop_fraction: float = 0.4
    dev_fraction: float = 0.1
    test_fraction: float = 0.1

    def __post_init__(self) -> None:
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise ValueError(f"WorldConfig.seed must be an integer, got {self.seed!r}")
        for name in ("n_people", "n_places", "n_orgs", "n_works", "n_questions"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"WorldConfig.{name} must be a positive integer, got {v!r}")
        for name in ("two_hop_fraction", "dev_fraction", "test_fraction"):
            v = getattr(self, name)
            # two_hop_fraction may be 1 (an all-two-hop world is meaningful); the split fractions may not.
            top_ok = name == "two_hop_fraction"
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not (0 <= v < 1 or (top_ok and v == 1)):
                raise ValueError(f"WorldConfig.{name} must be in [0, 1{']' if top_ok else ')'}, got {v!r}")
        if self.dev_fraction + self.test_fraction >= 1:
            raise ValueError(f"WorldConfig.dev_fraction + test_fraction must be < 1 (train must not be empty), "
                             f"got {self.dev_fraction} + {self.test_fraction}")


@dataclass
class World:
    config: WorldConfig
    corpus: list[dict[str, str]]  # {"id", "title", "contents"}
    splits: dict[str, list[dict[str, Any]]]  # "train" / "dev" / "test" -> question rows
