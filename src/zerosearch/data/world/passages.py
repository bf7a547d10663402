"""The corpus: one Wikipedia-style passage per entity, in the Search-R1 format
(`contents = '"' + title + '"\\n' + text`), each with a distractor sentence that names another entity so
retrieval is not a title lookup. Package-internal; the rng call order is part of the world's identity."""

from __future__ import annotations

import random
from typing import Any

from zerosearch.data.world.entities import _KINDS, _Org, _Person, _Place, _Work


def _an(word: str) -> str:
    return f"{'an' if word[0].lower() in 'aeiou' else 'a'} {word}"


def _and(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _other(rng: random.Random, items: list[Any], exclude: Any) -> Any:
    """A random item that is not `exclude`, or None when there is none."""
    if len(items) < 2:
        return None
    while (x := rng.choice(items)) is exclude:
        pass
    return x



def _person_text(p: _Person, rng: random.Random, people: list[_Person], places: list[_Place]) -> list[str]:
    where = f"{p.birthplace.name}, {p.birthplace.country}"
    s = [rng.choice((f"{p.name} was {_an(p.occupation)} born in {p.born} in {where}.",
                     f"{p.name} (born {p.born} in {where}) was {_an(p.occupation)}."))]
    assert p.employer is not None
    s.append(rng.choice((f"{p.surname} worked for the {p.employer.name}.",
                         f"{p.surname} was employed by the {p.employer.name}.",
                         f"For most of a long career, {p.surname} worked at the {p.employer.name}.")))
    if p.works:
        s.append(f"{p.surname} is best known for the {p.works[0].kind} {p.works[0].title}.")
    if p.spouse:
        s.append(f"{p.surname} was married to {p.spouse.name}.")
    if p.founded:
        orgs = sorted(p.founded, key=lambda o: o.founded)
        s.append(f"{p.surname} founded {_and([f'the {o.name} in {o.founded}' for o in orgs])}.")
    # A distractor: another entity named here makes this passage a plausible hit for searches about it.
    if rng.random() < 0.5 and (friend := _other(rng, people, p)):
        s.append(f"{p.surname} corresponded for many years with {friend.name}.")
    elif (town := _other(rng, places, p.birthplace)):
        s.append(rng.choice((f"{p.surname} later lived in {town.name}.",
                             f"A portrait of {p.surname} hangs in the civic museum of {town.name}.")))
    return s


def _place_text(c: _Place, rng: random.Random, places: list[_Place], natives: list[_Person],
                seats: list[_Org]) -> list[str]:
    what = "city" if c.population >= 20_000 else "town"
    s = [rng.choice((f"{c.name} is {_an(what)} in {c.country}, on the {c.river}.",
                     f"{c.name} is {_an(what)} in {c.country} on the banks of the {c.river}.")),
         rng.choice((f"It was founded in {c.founded} and has a population of {c.population:,}.",
                     f"Founded in {c.founded}, {c.name} has about {c.population:,} inhabitants.")),
         f"Its best-known landmark is the {c.landmark}."]
    if natives:
        picked = sorted(rng.sample(natives, min(2, len(natives))), key=lambda p: p.pid)
        s.append(f"Notable people born in {c.name} include {_and([p.name for p in picked])}.")
    if seats:
        picked_orgs = sorted(rng.sample(seats, min(2, len(seats))), key=lambda o: o.pid)
        s.append(f"{c.name} is home to the headquarters of {_and([f'the {o.name}' for o in picked_orgs])}.")
    if (twin := _other(rng, places, c)):
        s.append(rng.choice((f"{c.name} is twinned with {twin.name}.", f"{c.name} has long traded with {twin.name}.")))
    return s


def _org_text(o: _Org, rng: random.Random, orgs: list[_Org], places: list[_Place]) -> list[str]:
    s = [rng.choice((f"The {o.name} is {_an(o.industry)} company founded in {o.founded} by {o.founder.name}.",
                     f"The {o.name} was founded by {o.founder.name} in {o.founded} and works in the "
                     f"{o.industry} industry.")),
         rng.choice((f"It is headquartered in {o.hq.name}.", f"Its headquarters are in {o.hq.name}.")),
         f"At its peak it employed {rng.randint(40, 20_000):,} people."]
    if (rival := _other(rng, orgs, o)):
        s.append(f"Its main rival is the {rival.name}.")
    if (branch := _other(rng, places, o.hq)):
        s.append(f"In {o.founded + rng.randint(5, 60)} it opened a branch office in {branch.name}.")
    return s


def _work_text(w: _Work, rng: random.Random, works: list[_Work]) -> list[str]:
    _, _, made = _KINDS[w.kind]
    s = [f"{w.title} is {_an(w.kind)} by {w.creator.name}, {made} in {w.year}.",
         {"novel": f"It is set in {w.place.name}.", "film": f"It is set in {w.place.name}.",
          "album": f"It was recorded in {w.place.name}.",
          "painting": f"It hangs in the municipal gallery of {w.place.name}."}[w.kind]]
    if rng.random() < 0.5 and (peer := _other(rng, works, w)):
        s.append(f"Critics have often compared it to {peer.title}.")
    else:
        s.append(f"It was {'reissued' if w.kind != 'painting' else 'restored'} in {w.year + rng.randint(10, 50)}.")
    return s


def _corpus(rng: random.Random, people: list[_Person], places: list[_Place], orgs: list[_Org],
            works: list[_Work]) -> list[dict[str, str]]:
    natives: dict[str, list[_Person]] = {c.pid: [] for c in places}
    for p in people:
        natives[p.birthplace.pid].append(p)
    seats: dict[str, list[_Org]] = {c.pid: [] for c in places}
    for o in orgs:
        seats[o.hq.pid].append(o)
    rows = []
    for title, pid, sentences in (
        *((p.name, p.pid, _person_text(p, rng, people, places)) for p in people),
        *((c.name, c.pid, _place_text(c, rng, places, natives[c.pid], seats[c.pid])) for c in places),
        *((o.name, o.pid, _org_text(o, rng, orgs, places)) for o in orgs),
        *((w.title, w.pid, _work_text(w, rng, works)) for w in works),
    ):
        rows.append({"id": pid, "title": title, "contents": f'"{title}"\n' + " ".join(sentences)})
    return rows
