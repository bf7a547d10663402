"""How a question becomes queries: the search plans the cold start demonstrates.

A search agent worth the name does not paste the question into the engine. For "In what year was the
founder of the Kasat Shipyards born?" it asks for the founder first, reads the name in the documents,
then asks about that person:

    hop 1   query "Kasat Shipyards founder"       -> the Kasat Shipyards' passage, naming Varnel Odrasi
    hop 2   query "Varnel Odrasi birth year"      -> Varnel Odrasi's passage, holding the answer

A `Hop` is one such query, with the passage it must retrieve and, for a bridge hop, the entity the next
query names. Plans come from what the data says about a question, never from a model:

- the synthetic world: each question's `template` and `supporting_ids` (the passages of the chain, in
  order) and the corpus titles of those passages; `RELATIONS` names the relation each template asks about;
- HotpotQA (IRCoT format, `../shared/data/hotpotqa_dev500_contexts.jsonl`): its `contexts` with their
  `is_supporting` flags; a bridge question's second paragraph is the one whose title the first mentions.

Whether a plan actually works (each query retrieves its passage, the bridge is in the documents) is the
demonstration builder's check against a real engine (`zerosearch.training.warmup`), not this module's.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from zerosearch.data.qa import QARecord
from zerosearch.reward import normalize_answer

# template -> the relation asked at each hop, as query keywords ("{entity} {relation}") and as the noun of
# "the {relation} of {entity}". Mirrors zerosearch.data.world.questions._templates; a test fails if a template is missing.
RELATIONS: dict[str, tuple[str, ...]] = {
    "person_birth_year": ("birth year",), "person_birthplace": ("birthplace",),
    "person_birth_country": ("birth country",), "person_occupation": ("occupation",),
    "person_employer": ("employer",), "person_spouse": ("spouse",), "place_country": ("country",),
    "place_founded": ("founding year",), "place_river": ("river",), "org_founded": ("founding year",),
    "org_headquarters": ("headquarters",), "org_founder": ("founder",), "org_industry": ("industry",),
    "work_creator": ("creator",), "work_year": ("year",),
    "org_founder_birth_year": ("founder", "birth year"), "org_founder_birthplace": ("founder", "birthplace"),
    "org_hq_country": ("headquarters", "country"), "work_creator_birth_year": ("creator", "birth year"),
    "work_creator_birth_country": ("creator", "birth country"), "work_creator_employer": ("creator", "employer"),
    "employer_founder": ("employer", "founder"), "employer_headquarters": ("employer", "headquarters"),
    "spouse_birth_year": ("spouse", "birth year"), "birthplace_founded": ("birthplace", "founding year"),
    "birthplace_river": ("birthplace", "river"), "notable_work_year": ("best-known work", "year"),
}


@dataclass(frozen=True)
class Hop:
    query: str  # what the agent searches
    support: str  # the passage (id, or title for data without passage ids) the query must retrieve
    entity: str  # the entity the query is about
    relation: str  # what it asks about the entity ("founder"); "" where the data does not say
    bridge: str | None = None  # the entity this hop's documents must name: the next hop's subject

    @property
    def need(self) -> str:
        """The think text's description of what this hop looks for."""
        return f"the {self.relation} of {self.entity}" if self.relation else f"more about {self.entity}"


def keyword_query(entity: str, relation: str) -> str:
    return f"{entity} {relation}".strip()


def world_plan(rec: QARecord, titles: Mapping[str, str]) -> list[Hop] | None:
    """The chain of a synthetic-world question (one hop or two), or None when its template, supporting ids or
    their titles are unknown."""
    rels = RELATIONS.get(str(rec.extra.get("template")))
    support = rec.extra.get("supporting_ids")
    if rels is None or not isinstance(support, list) or len(support) != len(rels):
        return None
    names = [titles.get(str(s)) for s in support]
    if any(n is None for n in names):
        return None
    hops = []
    for i, (rel, sid, name) in enumerate(zip(rels, support, names)):
        bridge = names[i + 1] if i + 1 < len(names) else None
        hops.append(Hop(query=keyword_query(name, rel), support=str(sid), entity=name, relation=rel,  # type: ignore[arg-type]
                        bridge=bridge))
    return hops


_STOP = frozenset(
    "a an the of in on at to for by with from and or is was were are be been who whom whose what which when where "
    "why how did does do that this these those as it its his her their he she they than also both same".split())


def question_keywords(question: str, drop: str = "") -> str:
    """The question's content words, without those of `drop` (an entity named separately) and stopwords."""
    dropped = set(normalize_answer(drop).split())
    words = re.findall(r"[\w'-]+", question)
    return " ".join(w for w in words if w.lower() not in _STOP and normalize_answer(w) not in dropped)


def supporting_paragraphs(extra: Mapping[str, object]) -> list[tuple[str, str]]:
    """(title, text) of the supporting paragraphs of an IRCoT-format (HotpotQA) or MuSiQue row, in order."""
    for key, text_key in (("contexts", "paragraph_text"), ("paragraphs", "paragraph_text")):
        rows = extra.get(key)
        if isinstance(rows, list):
            return [(str(c.get("title", "")), str(c.get(text_key, ""))) for c in rows
                    if isinstance(c, dict) and c.get("is_supporting")]
    return []


def hotpot_plan(rec: QARecord) -> list[Hop] | None:
    """Two hops for a question with two supporting paragraphs (HotpotQA):

    - comparison (both titles appear in the question): one query per entity, its title + the question's
      remaining keywords;
    - bridge: the paragraph that names the other (if both do, the one the question names) comes first,
      queried with the question's keywords; its text names the bridge, the second paragraph's title
      (without its disambiguation), which the second query pairs with the question's keywords.
    """
    sup = supporting_paragraphs(rec.extra)
    if len(sup) != 2 or not all(t for t, _ in sup):
        return None
    titles, texts = [t for t, _ in sup], [x for _, x in sup]
    q = normalize_answer(rec.question)
    in_q = [normalize_answer(t) in q for t in titles]
    if rec.extra.get("type") == "comparison" or all(in_q):
        return [Hop(query=keyword_query(t, question_keywords(rec.question, drop=" ".join(titles))), support=t,
                    entity=t, relation="") for t in titles]
    mentions = [normalize_answer(_plain(titles[1 - i])) in normalize_answer(texts[i]) for i in range(2)]
    # The first paragraph is the one that names the other (the bridge); if both do, the one the question names.
    order = [i for i in (0, 1) if mentions[i]]
    if not order:
        return None
    first = order[0] if len(order) == 1 else next((i for i in order if in_q[i]), order[0])
    a, b = titles[first], titles[1 - first]
    name = _plain(b)  # "Winner (band)": the text says "Winner", and so does the agent that read it
    return [Hop(query=question_keywords(rec.question), support=a, entity=a, relation="", bridge=name),
            Hop(query=keyword_query(name, question_keywords(rec.question, drop=a)), support=b, entity=name,
                relation="")]


def _plain(title: str) -> str:
    """A Wikipedia title without its disambiguation: "Winner (band)" -> "Winner"."""
    return re.sub(r"\s*\([^)]*\)$", "", title).strip() or title


def plan(rec: QARecord, titles: Mapping[str, str]) -> list[Hop] | None:
    """The record's plan from whatever it carries: a world template, or HotpotQA supporting paragraphs."""
    if "template" in rec.extra:
        return world_plan(rec, titles)
    return hotpot_plan(rec)


def hops_of(rec_or_row: QARecord | Mapping[str, object]) -> int | None:
    """How many hops a question needs, from the fields the data has: `hops` (the synthetic world), HotpotQA's
    `type` (bridge and comparison both need two paragraphs), MuSiQue's id prefix ("2hop_..."), or the number
    of supporting paragraphs; None when the data does not say."""
    extra = rec_or_row.extra if isinstance(rec_or_row, QARecord) else rec_or_row
    rid = rec_or_row.id if isinstance(rec_or_row, QARecord) else str(rec_or_row.get("id", ""))
    h = extra.get("hops")
    if isinstance(h, int) and not isinstance(h, bool) and h > 0:
        return h
    if extra.get("type") in ("bridge", "comparison"):
        return 2
    m = re.match(r"(\d+)hop", rid)
    if m:
        return int(m.group(1))
    sup = supporting_paragraphs(extra)  # type: ignore[arg-type]
    return len(sup) or None
