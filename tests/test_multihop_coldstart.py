"""The multi-hop cold start's demonstration builder and the by-hops evaluation, on a hand-made world.

The world: the Kasat Shipyards (founded by Varnel Odrasi) and Varnel Odrasi (born 1874). A two-hop question
asks for the founder's birth year. The engine is a dictionary from query to passages, so each test says
exactly which search finds what.
"""

from __future__ import annotations

import pytest

from zerosearch.evaluation.behaviour import by_hops, hops_markdown, query_copy_rate
from zerosearch.data.qa import QARecord
from zerosearch.engines.base import Document, SearchEngine, SearchRequest
from zerosearch.data.query_plans import RELATIONS, hops_of, hotpot_plan, world_plan
from zerosearch.training.warmup import ColdStartMix, demonstrations
from zerosearch.data.world import WorldConfig, generate_world

ORG = Document(title="Kasat Shipyards", text="The Kasat Shipyards was founded by Varnel Odrasi in 1902.",
               source="fake", id="w1")
PERSON = Document(title="Varnel Odrasi", text="Varnel Odrasi was an engineer born in 1874 in Kelvora.",
                  source="fake", id="w2")
OTHER = Document(title="Ulen Devessa", text="Ulen Devessa was a painter born in 1775.", source="fake", id="w3")
TITLES = {"w1": "Kasat Shipyards", "w2": "Varnel Odrasi", "w3": "Ulen Devessa"}


class DictEngine(SearchEngine):
    name = "dict"

    def __init__(self, table: dict[str, list[Document]]):
        self.table, self.queries = table, []

    def search(self, requests: list[SearchRequest]) -> list[list[Document]]:
        self.queries += [r.query for r in requests]
        return [self.table.get(r.query, [OTHER]) for r in requests]


def two_hop(rid: str = "q1") -> QARecord:
    return QARecord(rid, "In what year was the founder of the Kasat Shipyards born?", ["1874"], "synthetic_world",
                    {"hops": 2, "template": "org_founder_birth_year", "supporting_ids": ["w1", "w2"]})


def one_hop(rid: str = "q2") -> QARecord:
    return QARecord(rid, "In what year was Varnel Odrasi born?", ["1874"], "synthetic_world",
                    {"hops": 1, "template": "person_birth_year", "supporting_ids": ["w2"]})


def test_world_plan_queries_the_bridge_then_names_it():
    p = world_plan(two_hop(), TITLES)
    assert [h.query for h in p] == ["Kasat Shipyards founder", "Varnel Odrasi birth year"]
    assert [h.support for h in p] == ["w1", "w2"] and p[0].bridge == "Varnel Odrasi" and p[1].bridge is None
    assert world_plan(QARecord("x", "?", ["a"], "w", {"template": "nope", "supporting_ids": ["w1"]}), TITLES) is None


def test_every_world_template_has_its_relations():
    world = generate_world(WorldConfig(n_people=40, n_places=20, n_orgs=20, n_works=20, n_questions=400))
    rows = [q for split in world.splits.values() for q in split]
    templates = {q["template"]: q["hops"] for q in rows}
    assert set(templates) <= set(RELATIONS)
    assert all(len(RELATIONS[t]) == h for t, h in templates.items())


def test_two_hop_chain_found_from_the_engine():
    engine = DictEngine({"Kasat Shipyards founder": [ORG, OTHER], "Varnel Odrasi birth year": [PERSON, OTHER]})
    demos, report = demonstrations([two_hop()], engine, examples=1, mix=ColdStartMix(two_hop=1, recovery=0, verbatim=0),
                                   titles=TITLES, k=2)
    assert report["two_hop"]["kept"] == 1 and len(demos) == 1
    d = demos[0]
    assert d["kind"] == "two_hop" and d["queries"] == ["Kasat Shipyards founder", "Varnel Odrasi birth year"]
    loss = [s for s, train in d["segments"] if train]
    info = [s for s, train in d["segments"] if not train]
    assert len(loss) == 3 and len(info) == 2
    assert "The founder is Varnel Odrasi." in loss[1] and loss[1].endswith("<search> Varnel Odrasi birth year </search>")
    assert "Varnel Odrasi was an engineer" in info[1] and loss[2].endswith("<answer> 1874 </answer>")


def test_two_hop_dropped_when_the_second_search_misses():
    engine = DictEngine({"Kasat Shipyards founder": [ORG], "Varnel Odrasi birth year": [OTHER]})
    demos, report = demonstrations([two_hop()], engine, examples=1, mix=ColdStartMix(two_hop=1, recovery=0, verbatim=0),
                                   titles=TITLES, k=1)
    assert demos == [] and report["two_hop"]["dropped"] == {"second query missed its passage": 1}


def test_two_hop_dropped_when_the_bridge_is_not_in_the_first_documents():
    renamed = Document(title="Kasat Shipyards", text="The Kasat Shipyards builds ships.", source="fake", id="w1")
    engine = DictEngine({"Kasat Shipyards founder": [renamed], "Varnel Odrasi birth year": [PERSON]})
    demos, report = demonstrations([two_hop()], engine, examples=1, mix=ColdStartMix(two_hop=1, recovery=0, verbatim=0),
                                   titles=TITLES, k=1)
    assert demos == [] and report["two_hop"]["dropped"] == {"bridge not in the first documents": 1}
    assert engine.queries == ["Kasat Shipyards founder"]  # no second search for a broken chain


def test_one_hop_reformulated_and_recovery():
    engine = DictEngine({"Varnel Odrasi birth year": [PERSON]})  # the partial "Odrasi birth year" misses
    mix = ColdStartMix(two_hop=0, recovery=0.5, verbatim=0)
    demos, report = demonstrations([one_hop("a"), one_hop("b")], engine, examples=2, mix=mix, titles=TITLES, k=1)
    kinds = {d["kind"]: d for d in demos}
    assert set(kinds) == {"reformulated", "recovery"}
    assert kinds["reformulated"]["queries"] == ["Varnel Odrasi birth year"]
    assert kinds["recovery"]["queries"] == ["Odrasi birth year", "Varnel Odrasi birth year"]
    assert "not about Varnel Odrasi" in kinds["recovery"]["segments"][2][0]


def test_recovery_dropped_when_the_partial_query_finds_the_passage():
    engine = DictEngine({"Varnel Odrasi birth year": [PERSON], "Odrasi birth year": [PERSON]})
    demos, report = demonstrations([one_hop()], engine, examples=1, mix=ColdStartMix(two_hop=0, recovery=1, verbatim=0),
                                   titles=TITLES, k=1)
    assert demos == [] and report["recovery"]["dropped"] == {"partial query found the passage anyway": 1}


def test_mix_validates_and_splits_the_examples():
    assert ColdStartMix(two_hop=0.5, recovery=0.1, verbatim=0.1).targets(100) == {
        "two_hop": 50, "reformulated": 30, "recovery": 10, "verbatim": 10}
    with pytest.raises(ValueError, match="must be <= 1"):
        ColdStartMix(two_hop=0.8, recovery=0.2, verbatim=0.1)
    with pytest.raises(ValueError, match="two_hop must be a share"):
        ColdStartMix(two_hop=-0.1)


def test_hotpot_bridge_plan_from_supporting_paragraphs():
    rec = QARecord("h", "What government position was held by the woman who portrayed Corliss Archer in the film "
                        "Kiss and Tell?", ["Chief of Protocol"], "hotpotqa", {"contexts": [
                            {"title": "Shirley Temple", "paragraph_text": "Shirley Temple was Chief of Protocol.",
                             "is_supporting": True},
                            {"title": "Janet Waldo", "paragraph_text": "An actress.", "is_supporting": False},
                            {"title": "Kiss and Tell", "paragraph_text": "Kiss and Tell stars Shirley Temple as Corliss.",
                             "is_supporting": True}]})
    p = hotpot_plan(rec)
    assert [h.support for h in p] == ["Kiss and Tell", "Shirley Temple"] and p[0].bridge == "Shirley Temple"
    assert p[1].query.startswith("Shirley Temple ") and "Kiss" not in p[1].query
    assert hops_of(rec) == 2


def test_hops_from_each_kind_of_data():
    assert hops_of(one_hop()) == 1 and hops_of(two_hop()) == 2
    assert hops_of(QARecord("3hop1__x", "q", ["a"], "musique")) == 3
    assert hops_of(QARecord("x", "q", ["a"], "nq")) is None
    assert hops_of({"id": "y", "type": "comparison"}) == 2


def _row(hops, em, queries, q="Where was X born?", method="search-agent"):
    return {"method": method, "hops": hops, "em": em, "f1": em, "searches": len(queries), "queries": queries,
            "question": q}


def test_per_hop_metrics_and_query_copy_rate_by_hand():
    rows = [_row(1, 1.0, ["where was x born"]),  # a copy: case and punctuation do not count
            _row(1, 0.0, ["X birthplace"]),
            _row(2, 1.0, ["Y founder", "X birthplace"]),
            _row(2, 0.0, ["Where was X born?", "X", "X again"]),
            _row(None, 0.0, [])]
    assert query_copy_rate(rows[:2]) == 0.5 and query_copy_rate(rows[2:4]) == pytest.approx(1 / 5)
    assert query_copy_rate([rows[4]]) is None
    t = by_hops(rows, ["search-agent"])["search-agent"]
    assert list(t) == ["1-hop", "2-hop", "unknown"]
    assert t["1-hop"] == {"n": 2, "em": 0.5, "f1": 0.5, "searches": 1.0, "copy_rate": 0.5}
    assert t["2-hop"]["searches"] == 2.5 and t["2-hop"]["em"] == 0.5
    md = hops_markdown({"search-agent": t})
    assert "| search-agent | 2-hop | 2 | 50.0 | 50.0 | 2.50 | 20% |" in md and "| unknown | 1 | 0.0 | 0.0 | 0.00 | - |" in md
