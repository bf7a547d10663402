import json
import re

import pytest

from zerosearch.cli import main
from zerosearch.data.qa import read_qa
from zerosearch.reward import normalize_answer
from zerosearch.data.world import SPLITS, WorldConfig, ensure_world, generate_world, write_world

FILES = ("corpus.jsonl", "train.jsonl", "dev.jsonl", "test.jsonl", "world.json")
SMALL = dict(n_people=60, n_places=20, n_orgs=20, n_works=30, n_questions=200)


@pytest.fixture(scope="module")
def world():
    return generate_world(WorldConfig(**SMALL))


def questions(world):
    return [q for split in SPLITS for q in world.splits[split]]


def test_same_seed_same_bytes_other_seed_differs(tmp_path):
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    write_world(generate_world(WorldConfig(**SMALL)), a)
    write_world(generate_world(WorldConfig(**SMALL)), b)
    write_world(generate_world(WorldConfig(seed=1, **SMALL)), c)
    for name in FILES:
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    assert (a / "corpus.jsonl").read_bytes() != (c / "corpus.jsonl").read_bytes()
    assert (a / "train.jsonl").read_bytes() != (c / "train.jsonl").read_bytes()


def test_ids_titles_and_questions_are_unique(world):
    ids = [p["id"] for p in world.corpus]
    assert len(world.corpus) == 130 and len(set(ids)) == len(ids)
    assert all(re.fullmatch(r"w\d{5}", i) for i in ids)
    # Unique even after answer normalisation, so exact match can never confuse two entities.
    titles = [normalize_answer(p["title"]) for p in world.corpus]
    assert len(set(titles)) == len(titles)
    qs = questions(world)
    assert len({q["id"] for q in qs}) == len({q["question"] for q in qs}) == len(qs)


def test_passages_are_search_r1_rows_with_distractors(world):
    titles = [p["title"] for p in world.corpus]
    mentions_other = 0
    for p in world.corpus:
        assert set(p) == {"id", "title", "contents"}
        head, text = p["contents"].split("\n")
        assert head == f'"{p["title"]}"' and text.startswith(("The ", p["title"]))
        assert 3 <= text.count(". ") + 1 <= 6, text
        mentions_other += any(t != p["title"] and t in text for t in titles)
    assert mentions_other > 0.8 * len(world.corpus)  # retrieval is not a title lookup


def test_answers_are_in_the_supporting_passages(world):
    # The key property: everything needed to answer is findable by search, and nowhere else.
    contents = {p["id"]: p["contents"] for p in world.corpus}
    for q in questions(world):
        assert q["hops"] == len(q["supporting_ids"]) and q["data_source"] == "synthetic_world"
        assert all(i in contents for i in q["supporting_ids"])
        assert q["golden_answers"] and all(isinstance(a, str) and a for a in q["golden_answers"])
        for a in q["golden_answers"]:
            assert any(a in contents[i] for i in q["supporting_ids"]), (q, a)
        if q["hops"] == 2:  # the chain starts at an entity named in the question
            first = contents[q["supporting_ids"][0]].split("\n")[0].strip('"')
            assert first in q["question"]
            assert q["golden_answers"][0] in contents[q["supporting_ids"][1]]


def test_hop_mix_and_splits(world):
    qs = questions(world)
    assert len(qs) == 200
    assert sum(q["hops"] == 2 for q in qs) == 80  # 0.4 of 200
    assert [len(world.splits[s]) for s in SPLITS] == [160, 20, 20]
    for split in SPLITS:
        assert all(q["split"] == split and q["id"].startswith(f"world-{split}-") for q in world.splits[split])
    seen = [{q["question"] for q in world.splits[s]} for s in SPLITS]
    assert not (seen[0] & seen[1] or seen[0] & seen[2] or seen[1] & seen[2])
    assert len({q["template"] for q in qs}) > 20  # round-robin spreads questions over the templates


def test_question_files_read_with_read_qa(tmp_path, world):
    write_world(world, tmp_path)
    for split in SPLITS:
        recs = read_qa(tmp_path / f"{split}.jsonl")
        assert [r.id for r in recs] == [q["id"] for q in world.splits[split]]
        assert recs[0].data_source == "synthetic_world"
        assert recs[0].golden_answers == world.splits[split][0]["golden_answers"]
        assert recs[0].extra["supporting_ids"] == world.splits[split][0]["supporting_ids"]
    meta = json.loads((tmp_path / "world.json").read_text())
    assert meta["config"]["n_people"] == 60 and meta["counts"]["passages"] == 130
    assert meta["counts"]["two_hop"] + meta["counts"]["one_hop"] == meta["counts"]["questions"] == 200


def test_ensure_world_reuses_then_regenerates(tmp_path):
    cfg = WorldConfig(**SMALL)
    assert ensure_world(tmp_path, cfg) == tmp_path
    mtimes = {n: (tmp_path / n).stat().st_mtime_ns for n in FILES}
    ensure_world(tmp_path, cfg)
    assert {n: (tmp_path / n).stat().st_mtime_ns for n in FILES} == mtimes

    ensure_world(tmp_path, WorldConfig(seed=7, **SMALL))
    assert json.loads((tmp_path / "world.json").read_text())["config"]["seed"] == 7

    train = (tmp_path / "train.jsonl").read_bytes()
    (tmp_path / "train.jsonl").write_text("tampered\n")  # a damaged file fails the content hash
    ensure_world(tmp_path, WorldConfig(seed=7, **SMALL))
    assert (tmp_path / "train.jsonl").read_bytes() == train


def test_tiny_world_still_works():
    w = generate_world(WorldConfig(n_people=1, n_places=1, n_orgs=1, n_works=1, n_questions=50))
    assert len(w.corpus) == 4
    qs = questions(w)
    assert 0 < len(qs) <= 50 and len({q["question"] for q in qs}) == len(qs)


@pytest.mark.parametrize("field, value", [
    ("n_people", 0), ("n_works", -3), ("n_questions", 2.5), ("seed", "x"), ("two_hop_fraction", 1.5),
    ("dev_fraction", 1.0), ("test_fraction", -0.1),
])
def test_config_validation_names_the_field(field, value):
    with pytest.raises(ValueError, match=field):
        WorldConfig(**{field: value})
    with pytest.raises(ValueError, match="dev_fraction \\+ test_fraction"):
        WorldConfig(dev_fraction=0.5, test_fraction=0.5)


def test_cli_writes_world(tmp_path, capsys):
    out = tmp_path / "w"
    argv = ["world", "--out", str(out), "--people", "50", "--places", "10", "--orgs", "10", "--works", "10",
            "--questions", "100"]
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert all((out / n).exists() for n in FILES)
    assert "passages:  80" in text and "sample questions:" in text and "generated" in text
    assert main(argv) == 0 and "reused" in capsys.readouterr().out
    assert main(["world", "--out", str(out), "--people", "0"]) == 2
    assert "n_people" in capsys.readouterr().err
