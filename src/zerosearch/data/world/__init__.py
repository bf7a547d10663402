"""The built-in synthetic search world: fictional entities, Wikipedia-style passages, and QA about them.

Why it exists: on real benchmarks (NQ, HotpotQA, ...) a model can often answer from memory, so a rising
score does not show that it learned to *search*. Here every person, place, organisation and work is
invented from syllables by a seeded generator, so no pretrained model can know that "Varnel Odrasi" was
born in 1874 in Kelvora; the only way to answer is to retrieve the passage that says so. That makes the
world a clean target for demos, tests and benchmarks of the search loop:

- one passage per entity, in the Search-R1 corpus format (`contents = '"' + title + '"\\n' + text`),
  with distractor sentences that mention other entities so retrieval is not a title lookup;
- single-hop questions (one passage holds the answer) and two-hop questions (the first passage names an
  entity whose passage holds the answer), each with its gold answers and the ids of its supporting
  passages, split into train/dev/test.

Names are unique within a world even after answer normalisation, so every question has one answer. The
same config gives the same world byte for byte: all randomness comes from one `random.Random(seed)` and
everything is iterated in list order (never over a set, never through the per-process salted `hash()`).

Modules: `config` (WorldConfig, World, file-format constants), `entities` (who and what exists, their
names), `passages` (the corpus text), `questions` (templates, one- and two-hop QA, splits), `build`
(generate_world, write/ensure/cached_world).
"""

from __future__ import annotations

from zerosearch.data.world.build import cached_world, ensure_world, generate_world, world_is_current, write_world
from zerosearch.data.world.config import DATA_FILES, DATA_SOURCE, SPLITS, WORLD_FORMAT, World, WorldConfig

__all__ = ["DATA_FILES", "DATA_SOURCE", "SPLITS", "WORLD_FORMAT", "World", "WorldConfig", "cached_world",
           "ensure_world", "generate_world", "world_is_current", "write_world"]
