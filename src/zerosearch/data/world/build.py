"""Generating a world from its config, writing it to disk (corpus.jsonl, train/dev/test.jsonl, world.json),
and reusing a written one: `ensure_world` for a given folder, `cached_world` for the per-config cache."""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import asdict
from pathlib import Path

from zerosearch.data.world.config import DATA_FILES, SPLITS, WORLD_FORMAT, World, WorldConfig
from zerosearch.data.world.entities import _entities
from zerosearch.data.world.passages import _corpus
from zerosearch.data.world.questions import _questions, _templates
from zerosearch.io import atomic_write_jsonl, atomic_write_text


def generate_world(cfg: WorldConfig | None = None) -> World:
    cfg = cfg or WorldConfig()
    rng = random.Random(cfg.seed)
    people, places, orgs, works = _entities(cfg, rng)
    corpus = _corpus(rng, people, places, orgs, works)
    splits = _questions(cfg, rng, _templates(people, places, orgs, works))
    return World(config=cfg, corpus=corpus, splits=splits)


# --- files ------------------------------------------------------------------------------------------


def _content_hash(out: Path) -> str:
    h = hashlib.sha256()
    for name in DATA_FILES:
        h.update(name.encode() + b"\0" + (out / name).read_bytes())
    return h.hexdigest()


def write_world(world: World, out_dir: str | Path) -> Path:
    """Write corpus.jsonl, train/dev/test.jsonl and world.json (config, counts, content hash) to out_dir.

    world.json goes last: a run killed half-way leaves no world.json, so ensure_world regenerates."""
    out = Path(out_dir)
    atomic_write_jsonl(out / "corpus.jsonl", world.corpus)
    for split in SPLITS:
        atomic_write_jsonl(out / f"{split}.jsonl", world.splits[split])
    questions = [q for split in SPLITS for q in world.splits[split]]
    counts = {"passages": len(world.corpus), "questions": len(questions),
              **{split: len(world.splits[split]) for split in SPLITS},
              "one_hop": sum(q["hops"] == 1 for q in questions), "two_hop": sum(q["hops"] == 2 for q in questions)}
    meta = {"format": WORLD_FORMAT, "config": asdict(world.config), "counts": counts, "sha256": _content_hash(out)}
    atomic_write_text(out / "world.json", json.dumps(meta, ensure_ascii=False, indent=2) + "\n")
    return out


def world_is_current(out_dir: str | Path, cfg: WorldConfig) -> bool:
    """True if out_dir holds an intact world made from `cfg` by this version of the generator."""
    out = Path(out_dir)
    try:
        meta = json.loads((out / "world.json").read_text(encoding="utf-8"))
        return (isinstance(meta, dict) and meta.get("format") == WORLD_FORMAT
                and meta.get("config") == asdict(cfg) and meta.get("sha256") == _content_hash(out))
    except (OSError, ValueError):
        return False


def ensure_world(out_dir: str | Path, cfg: WorldConfig | None = None) -> Path:
    """Reuse the world in out_dir if it matches `cfg` (and its files are intact), else (re)generate it."""
    cfg = cfg or WorldConfig()
    if not world_is_current(out_dir, cfg):
        write_world(generate_world(cfg), out_dir)
    return Path(out_dir)


def cached_world(cfg: WorldConfig | None = None, world_dir: str | Path | None = None) -> Path:
    """The world for `cfg`, in `world_dir` or in the cache (one folder per config), generated on first use.
    This is what `world` means wherever a command takes data or a corpus."""
    from zerosearch.io import cache_dir

    cfg = cfg or WorldConfig()
    if world_dir is None:
        key = hashlib.sha256(json.dumps(asdict(cfg), sort_keys=True).encode()).hexdigest()[:10]
        world_dir = cache_dir("worlds", key)
    return ensure_world(world_dir, cfg)
