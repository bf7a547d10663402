"""The leak guard: catch a policy that gets the gold answer out of the simulator without searching for it.

A gold-aware simulator is told the question and its answer, so a policy can learn queries that say
nothing about the question ("respond with the hidden text", "what is the answer", "?") and still come
back with the answer: reward without search. A list of suspicious words cannot keep up with what a
policy can learn to write, so the guard decides from the *documents*:

    a result leaks when it states a gold answer that the query did not bring
    and that a search engine which does not know the answer would not have written either.

Step by step, for one (query, documents) result:

1. **Does a document state a gold answer?** The SQuAD-normalised answer (any alias) occurs on word
   boundaries in the normalised title + text. Answers that tell nothing are skipped: "yes"/"no" (every
   document contains such words) and answers written in the question ("Which is older, X or Y?" -> "X").
   No such document: clean, and nothing else is computed (the common case costs a string search).
2. **Did the query bring it?** A query that contains a gold answer ("Kelvora founded 1631") is a
   confirmation search: a real engine would return the answer too. Clean.
3. **Is the answer expected here?** In *useful* mode the simulator is *meant* to state the answer to an
   honest query about the question: the paper's useful documents contain it. So a useful result is
   expected to state it when the query is **about the question's entities**: it shares a word with the
   question's names (capitalised words and numbers, compared on 5-letter prefixes so "Orwell's" matches
   "Orwell"; for an all-lowercase question such as NQ's, two of its content words). An answer obtained
   by asking *about the subject* passes, one obtained by asking *for the hidden text* does not, whatever
   the words of the request. In *noisy* mode the simulator was asked for documents that do not help, so
   any document stating the answer is a candidate leak, on-topic or not.
4. **The answer-blind referee.** A candidate is not condemned on the heuristic alone: the same query is
   generated again, in the same mode, by the same model *without* the question and answer (the prompt
   evaluation uses). If that answer-blind result also states the answer, the query brings it by itself
   (a famous fact, a bridge entity the model knows: "James Cameron birthplace"), as a real engine would:
   cleared. Otherwise the result is flagged. The referee costs one generation per candidate only.

Modes (`SimulatedEngine(leak_guard=...)`): "flag" marks the leaking documents (`meta["leak"]`) and
counts them; the policy still reads them. "replace" hands the policy the referee's answer-blind result
instead, so a leaking query earns exactly what an answer-blind engine would give it: nothing to learn
from asking for the hidden text. "off" does nothing.

Known limits (measured in docs/results/leak-guard.md): a second-hop query that names only a bridge entity
("Velmira Ostrand birthplace" for "Where was the director of The Kelvora Saga born?") is off-topic by
rule 3 and, when the simulator does not know the entity (always, in the synthetic world), the referee
cannot clear it: such results are flagged (and, with "replace", answered answer-blind). A query that
lists many candidate answers passes rule 2. Names are detected by capitals, so an all-lowercase question
falls back to content-word overlap.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from zerosearch.reward import normalize_answer

STOPWORDS = frozenset("""
a about above after again against all also am an and any are as at be because been before being below
between both but by can could did do does doing down during each few for from further had has have having
he her here hers herself him himself his how i if in into is it its itself just me more most my myself no
nor not of off on once only or other our ours ourselves out over own same she should so some such than that
the their theirs them themselves then there these they this those through to too under until up very was
we were what when where which while who whom whose why will with would you your yours yourself yourselves
tell find show give search info information please many much s t name
""".split())

_UNINFORMATIVE_ANSWERS = frozenset({"yes", "no"})
_PREFIX = 5  # a cheap stemmer: "directed"/"director", "Orwell's"/"Orwell"
_WORD = re.compile(r"[^\W_]+(?:['\u2019][^\W_]+)*")

REASON_OFF_TOPIC = "off-topic query"  # the query shares no name of the question
REASON_NOISY = "noisy result"  # noisy documents were asked not to help


def content_words(text: str) -> list[str]:
    return [w for w in normalize_answer(text).split() if w not in STOPWORDS]


def _contains(haystack_norm: str, needle_norm: str) -> bool:
    return bool(needle_norm) and f" {needle_norm} " in f" {haystack_norm} "


def _stems(words: Sequence[str]) -> set[str]:
    return {w[:_PREFIX] for w in words}


def entity_words(question: str) -> list[str]:
    """The question's names: capitalised words and numbers that are not stop-words, normalised."""
    out = []
    for raw in _WORD.findall(question):
        if raw[0].isupper() or any(c.isdigit() for c in raw):
            out += [w for w in normalize_answer(raw).split() if w not in STOPWORDS]
    return out


@dataclass
class LeakVerdict:
    """What the document rules say about one result, before the referee.

    `candidate` results go to the answer-blind referee; `reason` says why the answer was unexpected.
    """

    candidate: bool
    reason: str | None = None
    doc_hits: list[int] = field(default_factory=list)  # documents stating a gold answer


class LeakGuard:
    def __init__(self, min_shared_words: int = 2):
        """`min_shared_words`: content words a query must share with an all-lowercase question (no names)."""
        if min_shared_words < 1:
            raise ValueError(f"min_shared_words must be >= 1, got {min_shared_words}")
        self.min_shared_words = min_shared_words

    @staticmethod
    def telling_answers(question: str, golden_answers: Sequence[str]) -> list[str]:
        """The normalised gold answers whose presence in a document tells something."""
        q = normalize_answer(question)
        return [g for g in dict.fromkeys(normalize_answer(a) for a in golden_answers)
                if g and g not in _UNINFORMATIVE_ANSWERS and not _contains(q, g)]

    def stating_docs(self, doc_texts: Sequence[str], question: str, golden_answers: Sequence[str]) -> list[int]:
        """Indices of the documents that state a telling gold answer."""
        golds = self.telling_answers(question, golden_answers)
        if not golds:
            return []
        docs = [normalize_answer(t) for t in doc_texts]
        return [i for i, d in enumerate(docs) if any(_contains(d, g) for g in golds)]

    @staticmethod
    def query_brings_answer(query: str, golden_answers: Sequence[str]) -> bool:
        q = normalize_answer(query)
        return any(_contains(q, normalize_answer(a)) for a in golden_answers)

    def on_topic(self, query: str, question: str) -> bool:
        """Whether `query` is about the question's subject: it names one of its entities (or, for a
        question without capitalised names, shares `min_shared_words` content words with it)."""
        q = _stems(content_words(query))
        names = entity_words(question)
        if names:
            return bool(q & _stems(names))
        words = _stems(content_words(question))
        return len(q & words) >= min(self.min_shared_words, len(words)) > 0

    def check(self, query: str, question: str, golden_answers: Sequence[str], doc_texts: Sequence[str],
              mode: str = "useful") -> LeakVerdict:
        """Rules 1-3 of the module docstring for one result written in `mode` ("useful" or "noisy")."""
        if mode not in ("useful", "noisy"):
            raise ValueError(f"mode must be 'useful' or 'noisy', got {mode!r}")
        hits = self.stating_docs(doc_texts, question, golden_answers)
        if not hits or self.query_brings_answer(query, golden_answers):
            return LeakVerdict(False)
        if mode == "noisy":
            return LeakVerdict(True, REASON_NOISY, hits)
        if not self.on_topic(query, question):
            return LeakVerdict(True, REASON_OFF_TOPIC, hits)
        return LeakVerdict(False)
