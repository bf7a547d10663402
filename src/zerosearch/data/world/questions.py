"""The questions: every template the world can ask (one-hop: one passage holds the answer; two-hop: the
first passage names the entity whose passage holds it), the round-robin draw over templates, and the
train/dev/test split. Package-internal; the rng call order is part of the world's identity."""

from __future__ import annotations

import random
from typing import Any

from zerosearch.data.world.config import DATA_SOURCE, SPLITS, WorldConfig
from zerosearch.data.world.entities import _KINDS, _Org, _Person, _Place, _Work

# (question, golden answers, supporting passage ids)
_Q = tuple[str, list[str], list[str]]


def _river(c: _Place) -> list[str]:
    return [c.river, c.river.removesuffix(" River")]


def _templates(people: list[_Person], places: list[_Place], orgs: list[_Org],
               works: list[_Work]) -> list[tuple[str, int, list[_Q]]]:
    """Every question the world can ask, as (template, hops, candidates). Two-hop chains start at the
    passage named in the question and end at the passage that holds the answer."""
    def kw(w: _Work) -> str:
        return f"the {w.kind} {w.title}"

    emp = [(p, p.employer) for p in people if p.employer]
    wed = [(p, p.spouse) for p in people if p.spouse]
    known = [(p, p.works[0]) for p in people if p.works]
    return [
        ("person_birth_year", 1, [(f"In what year was {p.name} born?", [str(p.born)], [p.pid]) for p in people]),
        ("person_birthplace", 1, [(f"Where was {p.name} born?", [p.birthplace.name], [p.pid]) for p in people]),
        ("person_birth_country", 1, [(f"In which country was {p.name} born?", [p.birthplace.country], [p.pid])
                                     for p in people]),
        ("person_occupation", 1, [(f"What was the occupation of {p.name}?", [p.occupation], [p.pid]) for p in people]),
        ("person_employer", 1, [(f"Which organisation did {p.name} work for?", [o.name], [p.pid]) for p, o in emp]),
        ("person_spouse", 1, [(f"Who was {p.name} married to?", [s.name], [p.pid]) for p, s in wed]),
        ("place_country", 1, [(f"In which country is {c.name}?", [c.country], [c.pid]) for c in places]),
        ("place_founded", 1, [(f"In what year was {c.name} founded?", [str(c.founded)], [c.pid]) for c in places]),
        ("place_river", 1, [(f"On which river does {c.name} lie?", _river(c), [c.pid]) for c in places]),
        ("org_founded", 1, [(f"In what year was the {o.name} founded?", [str(o.founded)], [o.pid]) for o in orgs]),
        ("org_headquarters", 1, [(f"Where is the headquarters of the {o.name}?", [o.hq.name], [o.pid]) for o in orgs]),
        ("org_founder", 1, [(f"Who founded the {o.name}?", [o.founder.name], [o.pid]) for o in orgs]),
        ("org_industry", 1, [(f"In which industry does the {o.name} work?", [o.industry], [o.pid]) for o in orgs]),
        ("work_creator", 1, [(f"Who {_KINDS[w.kind][1]} {kw(w)}?", [w.creator.name], [w.pid]) for w in works]),
        ("work_year", 1, [(f"In what year was {kw(w)} {_KINDS[w.kind][2]}?", [str(w.year)], [w.pid]) for w in works]),
        ("org_founder_birth_year", 2, [(f"In what year was the founder of the {o.name} born?", [str(o.founder.born)],
                                        [o.pid, o.founder.pid]) for o in orgs]),
        ("org_founder_birthplace", 2, [(f"Where was the founder of the {o.name} born?", [o.founder.birthplace.name],
                                        [o.pid, o.founder.pid]) for o in orgs]),
        ("org_hq_country", 2, [(f"In which country is the headquarters of the {o.name}?", [o.hq.country],
                                [o.pid, o.hq.pid]) for o in orgs]),
        ("work_creator_birth_year", 2, [(f"In what year was the creator of {kw(w)} born?", [str(w.creator.born)],
                                         [w.pid, w.creator.pid]) for w in works]),
        ("work_creator_birth_country", 2, [(f"In which country was the creator of {kw(w)} born?",
                                            [w.creator.birthplace.country], [w.pid, w.creator.pid]) for w in works]),
        ("work_creator_employer", 2, [(f"Which organisation did the creator of {kw(w)} work for?",
                                       [w.creator.employer.name], [w.pid, w.creator.pid])
                                      for w in works if w.creator.employer]),
        ("employer_founder", 2, [(f"Who founded the organisation that {p.name} worked for?", [o.founder.name],
                                  [p.pid, o.pid]) for p, o in emp]),
        ("employer_headquarters", 2, [(f"Where is the headquarters of the organisation that {p.name} worked for?",
                                       [o.hq.name], [p.pid, o.pid]) for p, o in emp]),
        ("spouse_birth_year", 2, [(f"In what year was the spouse of {p.name} born?", [str(s.born)], [p.pid, s.pid])
                                  for p, s in wed]),
        ("birthplace_founded", 2, [(f"In what year was the birthplace of {p.name} founded?",
                                    [str(p.birthplace.founded)], [p.pid, p.birthplace.pid]) for p in people]),
        ("birthplace_river", 2, [(f"On which river lies the place where {p.name} was born?", _river(p.birthplace),
                                  [p.pid, p.birthplace.pid]) for p in people]),
        ("notable_work_year", 2, [(f"In what year did the best-known work of {p.name} appear?", [str(w.year)],
                                   [p.pid, w.pid]) for p, w in known]),
    ]


def _draw(rng: random.Random, groups: list[tuple[str, list[_Q]]], k: int, seen: set[str]) -> list[tuple[str, _Q]]:
    """Up to k distinct questions, round-robin over templates so that big entity types (people) do not
    crowd out the rest; a template that runs out simply drops out of the rotation."""
    pools = [(name, rng.sample(cands, len(cands))) for name, cands in groups]
    out: list[tuple[str, _Q]] = []
    while len(out) < k and any(pool for _, pool in pools):
        for name, pool in pools:
            if pool and len(out) < k:
                q = pool.pop()
                if q[0] not in seen:
                    seen.add(q[0])
                    out.append((name, q))
    return out


def _questions(cfg: WorldConfig, rng: random.Random, templates: list[tuple[str, int, list[_Q]]]
               ) -> dict[str, list[dict[str, Any]]]:
    n_two = round(cfg.n_questions * cfg.two_hop_fraction)
    seen: set[str] = set()
    drawn = []
    for hops, k in ((2, n_two), (1, cfg.n_questions - n_two)):
        group = [(name, cands) for name, h, cands in templates if h == hops]
        drawn += [(hops, name, q) for name, q in _draw(rng, group, k, seen)]
    rng.shuffle(drawn)
    n_test, n_dev = round(len(drawn) * cfg.test_fraction), round(len(drawn) * cfg.dev_fraction)
    parts = {"test": drawn[:n_test], "dev": drawn[n_test:n_test + n_dev], "train": drawn[n_test + n_dev:]}
    width = max(5, len(str(len(drawn))))
    return {split: [{"id": f"world-{split}-{i:0{width}d}", "question": q, "golden_answers": answers,
                     "data_source": DATA_SOURCE, "hops": hops, "supporting_ids": support, "template": name,
                     "split": split}
                    for i, (hops, name, (q, answers, support)) in enumerate(parts[split], start=1)]
            for split in SPLITS}
