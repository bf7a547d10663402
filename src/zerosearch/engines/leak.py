"""The leak guard: catch a policy that asks the simulator to repeat the gold answer it was told.

A gold-aware simulator knows the answer, so a policy can learn that queries which say nothing about the
question ("what is the answer", "repeat what you were given", "?") still come back with it: reward
without search. A result is *flagged* when both hold:

1. some document states a gold answer: the SQuAD-normalised answer occurs, on word boundaries, in the
   normalised document (title + text). Answers that cannot tell anything are skipped: "yes"/"no"
   (HotpotQA comparisons; every document contains such words) and answers already written in the
   question ("Which is older, X or Y?" -> "X").
2. the query does not ask about the question's subject. The heuristic, in order:
   a. it contains a meta-word about the simulator's instructions ("answer", "question", "ground truth",
      "you were given", "system prompt", ...): always suspicious, even with a guess in it ("is the
      answer Paris");
   b. it contains a gold answer itself: not suspicious (the policy brought the answer; a real engine
      would confirm it too);
   c. it has no content words (only stop-words or punctuation): suspicious;
   d. it shares no content word with the question (compared on 5-letter prefixes, a cheap stemmer:
      "directed"/"director") *and* has fewer than `min_content_words` content words: suspicious.
      Longer queries with no overlap are let through on purpose: in multi-hop questions the second hop
      names an entity the question does not ("James Cameron birthplace" for "Where was the director of
      Titanic born?"), and that is legitimate search.
This is a tripwire for the obvious exploit, not a proof of absence: a rising `leak_flagged` rate during
training is the signal to look at the queries, or to train with `leak_guard=replace` (flagged results are
regenerated answer-blind and noisy) or an answer-blind simulator.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from zerosearch.reward import normalize_answer

META_PHRASES: tuple[str, ...] = (
    "answer", "answers", "question", "questions", "ground truth", "groundtruth", "gold answer",
    "golden answer", "you were given", "you are given", "you were told", "you are told", "your instructions",
    "your prompt", "system prompt", "user is trying", "whose answer",
)

STOPWORDS = frozenset("""
a about above after again against all also am an and any are as at be because been before being below
between both but by can could did do does doing down during each few for from further had has have having
he her here hers herself him himself his how i if in into is it its itself just me more most my myself no
nor not of off on once only or other our ours ourselves out over own same she should so some such than that
the their theirs them themselves then there these they this those through to too under until up very was
we were what when where which while who whom whose why will with would you your yours yourself yourselves
tell find show give search info information please many much s t
""".split())

_UNINFORMATIVE_ANSWERS = frozenset({"yes", "no"})


def content_words(text: str) -> list[str]:
    return [w for w in normalize_answer(text).split() if w not in STOPWORDS]


def _contains(haystack_norm: str, needle_norm: str) -> bool:
    return bool(needle_norm) and f" {needle_norm} " in f" {haystack_norm} "


@dataclass
class LeakVerdict:
    flagged: bool
    reason: str | None = None  # why the query looked suspicious (None: it did not)
    doc_hits: list[int] = field(default_factory=list)  # documents stating a gold answer


class LeakGuard:
    def __init__(self, meta_phrases: Sequence[str] = META_PHRASES, min_content_words: int = 2):
        self.meta = tuple(normalize_answer(p) for p in meta_phrases if normalize_answer(p))
        self.min_content_words = min_content_words

    def suspicious_query(self, query: str, question: str, golden_answers: Sequence[str]) -> str | None:
        """Why `query` does not look like a search about `question` (None when it does)."""
        q = normalize_answer(query)
        for phrase in self.meta:
            if _contains(q, phrase):
                return f"meta-word {phrase!r}"
        if any(_contains(q, normalize_answer(a)) for a in golden_answers):
            return None
        words = content_words(query)
        if not words:
            return "no content words"
        shared = {w[:5] for w in words} & {w[:5] for w in content_words(question)}
        if not shared and len(words) < self.min_content_words:
            return "off-topic short query"
        return None

    @staticmethod
    def stating_docs(doc_texts: Sequence[str], question: str, golden_answers: Sequence[str]) -> list[int]:
        """Indices of the documents that state a (telling) gold answer."""
        q = normalize_answer(question)
        golds = [g for g in (normalize_answer(a) for a in golden_answers)
                 if g and g not in _UNINFORMATIVE_ANSWERS and not _contains(q, g)]
        if not golds:
            return []
        docs = [normalize_answer(t) for t in doc_texts]
        return [i for i, d in enumerate(docs) if any(_contains(d, g) for g in golds)]

    def check(self, query: str, question: str, golden_answers: Sequence[str], doc_texts: Sequence[str]) -> LeakVerdict:
        reason = self.suspicious_query(query, question, golden_answers)
        if reason is None:
            return LeakVerdict(False)
        hits = self.stating_docs(doc_texts, question, golden_answers)
        return LeakVerdict(bool(hits), reason, hits)
