"""The world's entities (people, places, organisations, works), the syllables their names are drawn from, and
`_entities`, which draws them all from the world's one `random.Random`.

Package-internal: the underscored names are shared with passages.py and questions.py, not exported. The order
of the rng calls in `_entities` is part of the world's identity (same config, same bytes): do not reorder."""

from __future__ import annotations

import math
import random
import re
from bisect import bisect_right
from collections.abc import Callable
from dataclasses import dataclass, field

from zerosearch.data.world.config import WorldConfig
from zerosearch.reward import normalize_answer

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
