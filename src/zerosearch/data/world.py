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
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import re
from bisect import bisect_right
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from zerosearch.io import atomic_write_jsonl, atomic_write_text
from zerosearch.reward import normalize_answer

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


# --- entities ---------------------------------------------------------------------------------------
# eq=False: entities reference each other (spouses, founders), and identity is what we mean anyway.


@dataclass(eq=False)
class _Place:
    name: str
    country: str
    river: str  # "Orvel River"
    founded: int
    population: int
    landmark: str
    pid: str = ""


@dataclass(eq=False)
class _Org:
    name: str
    industry: str
    founder: _Person
    founded: int
    hq: _Place
    pid: str = ""


@dataclass(eq=False)
class _Work:
    title: str
    kind: str
    creator: _Person
    year: int
    place: _Place  # where it is set / recorded / hung: a distractor mention
    pid: str = ""


@dataclass(eq=False)
class _Person:
    name: str
    born: int
    birthplace: _Place
    occupation: str = ""
    kind: str = ""  # the kind of work a creative person makes; "" for everyone else
    employer: _Org | None = None
    spouse: _Person | None = None
    works: list[_Work] = field(default_factory=list)
    founded: list[_Org] = field(default_factory=list)
    pid: str = ""

    @property
    def surname(self) -> str:
        return self.name.split()[-1]


# --- vocabulary -------------------------------------------------------------------------------------
# Syllables picked to sound plausible but not to spell real famous names; tuples keep the order fixed.

_FIRST_A = ("Var", "Mir", "Os", "Kel", "Tam", "Dra", "Ul", "Bren", "Cas", "Ez", "Fen", "Gor", "Hal", "Il",
            "Jor", "Lys", "Nav", "Orm", "Per", "Quen", "Ros", "Sev", "Tor", "Ves", "Wen", "Yr", "Zel", "Aud")
_FIRST_B = ("nel", "ith", "ek", "ara", "en", "ov", "ira", "an", "is", "ulf", "ette", "o", "ian", "wyn", "ast",
            "ila")
_SUR_A = ("Od", "Kas", "Vir", "Mal", "Tren", "Quo", "Zab", "Hes", "Lun", "Dev", "Ark", "Sol", "Bry", "Fal",
          "Gav", "Nol", "Pel", "Rud", "Sten", "Tav", "Ulm", "Wex", "Yor", "Dal", "Imr", "Kov", "Sarv", "Thel")
_SUR_B = ("", "", "a", "e", "i", "o", "ra", "en")
_SUR_C = ("si", "at", "ovic", "ard", "essa", "ine", "ek", "ov", "ani", "sk", "lund", "ey", "rin", "ask",
          "ell", "ur", "mar", "oth")
_PLACE_A = ("Kel", "Dra", "Ost", "Vel", "Tir", "Hol", "Bra", "Ash", "Cor", "Eld", "Fen", "Gal", "Lor", "Nor",
            "Pra", "Rav", "Sar", "Thal", "Ul", "Vor", "Wyn", "Zar", "Quel", "Brin", "Cael", "Drum", "Isk", "Mor")
_PLACE_B = ("", "a", "e", "i", "o", "en", "ar", "il")
_PLACE_C = ("vora", "dun", "haven", "brek", "stad", "mere", "sk", "gard", "enne", "holm", "ar", "ith", "ova",
            "ent", "ethe", "ovar")
_COUNTRY_A = ("Ostr", "Kalm", "Veld", "Sarn", "Thul", "Brev", "Iskr", "Dorn", "Ylv", "Quar", "Zemb", "Harv",
              "Lund", "Morv", "Pell", "Trav")
_COUNTRY_B = ("evia", "oria", "esia", "avia", "ania", "ennia", "aly")
_LANDMARKS = ("Bridge", "Cathedral", "Clock Tower", "Abbey", "Observatory", "Lighthouse", "Market Hall", "Gate")
_ADJECTIVES = ("Silent", "Hollow", "Amber", "Distant", "Gilded", "Broken", "Quiet", "Ashen", "Pale", "Burning",
               "Sunken", "Northern", "Iron", "Velvet", "Salt", "Wandering", "Bitter", "Narrow", "Second",
               "Patient", "Lonely", "Scarlet", "Drowned", "Borrowed", "Crooked")
_NOUNS = ("Orchard", "Harbour", "Lantern", "Meridian", "Cartographer", "Ferryman", "Atlas", "Vineyard",
          "Compass", "Mirror", "Archive", "Staircase", "Meadow", "Weaver", "Clockmaker", "Bell", "Threshold",
          "Cellar", "Observatory", "Tapestry", "Shepherd", "Almanac", "Furnace", "Balcony")
# industry -> name endings of organisations in it
_INDUSTRIES = (
    ("shipbuilding", ("Shipyards", "Shipbuilding Company")), ("mining", ("Mining Company", "Collieries")),
    ("banking", ("Bank", "Savings Bank")), ("publishing", ("Press", "Publishing House")),
    ("textile", ("Mills", "Textile Company")), ("railway", ("Railway Company", "Railways")),
    ("brewing", ("Brewery", "Breweries")), ("glassmaking", ("Glassworks",)),
    ("pharmaceutical", ("Laboratories", "Pharmaceuticals")), ("engineering", ("Foundry Company", "Engineering Works")),
    ("shipping", ("Shipping Line", "Steamship Company")), ("insurance", ("Assurance Society", "Insurance Company")),
    ("optics", ("Optical Works",)), ("porcelain", ("Porcelain Manufactory",)), ("telegraph", ("Telegraph Company",)),
)
# kind -> (occupation of its creators, verb for "who made it", participle for "when was it made")
_KINDS = {"novel": ("novelist", "wrote", "published"), "album": ("musician", "recorded", "released"),
          "painting": ("painter", "painted", "completed"), "film": ("film director", "directed", "released")}
_OTHER_OCCUPATIONS = ("engineer", "chemist", "architect", "physician", "banker", "judge", "astronomer",
                      "merchant", "botanist", "cartographer", "surveyor", "diplomat")
_CREATIVE_SHARE = 0.4  # share of people who make works
_MARRIED_SHARE = 0.4


class _Names:
    """Hands out names unique within the world, compared after answer normalisation, so "The Silent
    Orchard" and "Silent Orchard" can never both exist and exact-match grading cannot confuse two entities."""

    def __init__(self, rng: random.Random):
        self.rng = rng
        self.used: set[str] = set()  # membership only: never iterated, so its hash order never matters

    def new(self, draw: Callable[[random.Random], str]) -> str:
        for _ in range(100):
            name = draw(self.rng)
            if self._take(name):
                return name
        # The syllable space is nearly used up (a huge world): number the last draw, deterministically.
        k = 2
        while not self._take(f"{name} {k}"):
            k += 1
        return f"{name} {k}"

    def _take(self, name: str) -> bool:
        key = normalize_answer(name)
        if key in self.used:
            return False
        self.used.add(key)
        return True


def _word(r: random.Random, *syllables: tuple[str, ...]) -> str:
    # Collapse doubled vowels where syllables meet ("Quo" + "o" + "lund" -> "Quolund"): easier to read.
    return re.sub(r"([aeiou])\1", r"\1", "".join(r.choice(s) for s in syllables))


def _first(r: random.Random) -> str:
    return _word(r, _FIRST_A, _FIRST_B)


def _surname(r: random.Random) -> str:
    return _word(r, _SUR_A, _SUR_B, _SUR_C)


def _place_name(r: random.Random) -> str:
    return _word(r, _PLACE_A, _PLACE_B, _PLACE_C)


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


# --- generation -------------------------------------------------------------------------------------


def _entities(cfg: WorldConfig, rng: random.Random) -> tuple[list[_Person], list[_Place], list[_Org], list[_Work]]:
    names = _Names(rng)
    countries = [names.new(lambda r: _word(r, _COUNTRY_A, _COUNTRY_B))
                 for _ in range(max(2, round(math.sqrt(cfg.n_places) / 2)))]
    rivers = [names.new(_place_name) + " River" for _ in range(max(2, cfg.n_places // 6))]
    places = [_Place(name=names.new(_place_name), country=rng.choice(countries), river=rng.choice(rivers),
                     founded=rng.randint(800, 1750), population=rng.randint(2_000, 900_000),
                     landmark=f"{_surname(rng)} {rng.choice(_LANDMARKS)}")
              for _ in range(cfg.n_places)]
    people = [_Person(name=names.new(lambda r: f"{_first(r)} {_surname(r)}"), born=rng.randint(1760, 1960),
                      birthplace=rng.choice(places))
              for _ in range(cfg.n_people)]

    orgs = []
    for _ in range(cfg.n_orgs):
        industry, endings = rng.choice(_INDUSTRIES)
        founder = rng.choice(people)
        org = _Org(name=names.new(lambda r: f"{_surname(r)} {r.choice(endings)}"), industry=industry,
                   founder=founder, founded=founder.born + rng.randint(25, 55), hq=rng.choice(places))
        founder.founded.append(org)
        orgs.append(org)

    creators = rng.sample(people, max(1, round(len(people) * _CREATIVE_SHARE)))
    kinds = list(_KINDS)
    for p in creators:
        p.kind = rng.choice(kinds)
        p.occupation = _KINDS[p.kind][0]
    for p in people:
        if not p.kind:
            p.occupation = rng.choice(_OTHER_OCCUPATIONS)

    def title(r: random.Random) -> str:
        if r.random() < 0.6:
            return f"The {r.choice(_ADJECTIVES)} {r.choice(_NOUNS)}"
        return f"The {r.choice(_NOUNS)} of {r.choice(places).name}"

    works = []
    for _ in range(cfg.n_works):
        creator = rng.choice(creators)
        work = _Work(title=names.new(title), kind=creator.kind, creator=creator,
                     year=creator.born + rng.randint(20, 60), place=rng.choice(places))
        creator.works.append(work)
        works.append(work)

    # Employers: an organisation founded by the time the person was 45, so careers fit the calendar.
    by_founding = sorted(orgs, key=lambda o: o.founded)  # stable: ties stay in generation order
    years = [o.founded for o in by_founding]
    for p in people:
        p.employer = by_founding[rng.randrange(max(1, bisect_right(years, p.born + 45)))]

    # Spouses: pair neighbours in birth year among a random share of people.
    married = sorted((p for p in people if rng.random() < _MARRIED_SHARE), key=lambda p: p.born)
    for a, b in zip(married[::2], married[1::2]):
        a.spouse, b.spouse = b, a

    width = max(5, len(str(len(people) + len(places) + len(orgs) + len(works) - 1)))
    for i, e in enumerate([*people, *places, *orgs, *works]):
        e.pid = f"w{i:0{width}d}"
    return people, places, orgs, works


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
