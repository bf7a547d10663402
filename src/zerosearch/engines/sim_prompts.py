"""Everything the simulated search engine reads and writes as text: its prompts and its output format.

Two families (ZeroSearch, Table 2 of the paper and its code):
- "sft": the short form the simulator is fine-tuned on. For k = 5 and 30 words it is the paper's text
  word for word, so the released ZeroSearch simulators work with it unchanged.
- "prompt": for an un-tuned instruct model: the same instruction plus one worked example of k documents,
  an explicit goal sentence, and "output only the documents".
Each comes in a "useful" and a "noisy" variant that differ in a few words, and in an answer-blind form
(no question, no gold answer: realistic documents for the query alone) for evaluation, where the
simulator must not see gold answers.

`render_sim_prompt` is the one place these texts are assembled; the simulation-tuning pipeline builds its
training prompts with it and its targets with `render_documents`, and `parse_documents` reads both the
tuned and the un-tuned model's output back into documents. `k` and the document length are real
parameters (the reference code wrote "five" whatever k was).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, fields
from typing import Literal, NamedTuple

from zerosearch.engines.base import DocMode

SimFamily = Literal["prompt", "sft"]
SIM_FAMILIES: tuple[str, ...] = ("prompt", "sft")

HEAD = "You are the Google search engine.\n"
TASK = {
    "sft": "Given a query, you need to generate {k} {mode} documents for the query.\n",
    "prompt": "Given a query, you need to imitate the style of the following example and generate {k} {mode} "
              "documents for the query.\n",
}
EXAMPLE = "\nHere is an example:\nQuery: {query}\n{label} Output:\n{documents}\n"
CONTEXT = '\nThe user is trying to answer the question: "{question}" whose answer is {answer}.\n'
GOAL = {  # prompt family only: spells out what "useful"/"noisy" mean to an un-tuned model
    "useful": "You should generate documents that can help the user find the answer.\n",
    "noisy": "You should generate documents that are related to the query but do not help the user find the answer.\n",
}
LENGTH = "Each document should contain about {words} words, and these documents should contain {mode} information.\n"
ONLY = ("You must directly output the {k} English documents in the format of the example (Doc 1: ..., Doc 2: ...) "
        "and not output any other text.\n")
QUERY = "\nQuery: {query}\n{label} Output:\n"

# The worked example of the prompt family (the first k documents are shown). Our own text; about 30
# words each. Noisy documents stay on topic but never give the height (one gives another mountain's).
EXAMPLE_QUERY = "Mount Kilimanjaro height"
EXAMPLE_DOCS: dict[str, tuple[str, ...]] = {
    "useful": (
        "Mount Kilimanjaro in northeastern Tanzania is the highest mountain in Africa. Its summit, Uhuru Peak "
        "on the Kibo cone, rises 5,895 metres (19,341 feet) above sea level.",
        "At 5,895 metres, Kilimanjaro is also the tallest free-standing mountain in the world, rising about "
        "4,900 metres from its base on the plains around the town of Moshi.",
        "Kilimanjaro is a dormant volcano with three cones: Kibo, Mawenzi and Shira. Kibo is the tallest, and "
        "its crater rim holds Uhuru Peak, the 5,895-metre summit.",
        "Climbers on the Marangu and Machame routes pass from rainforest to arctic desert. Most reach Uhuru "
        "Peak, 19,341 feet high, after five to eight days of slow acclimatisation.",
        "Hans Meyer and Ludwig Purtscheller made the first recorded ascent of Kilimanjaro in 1889. The "
        "mountain's official height of 5,895 metres comes from a 1952 British survey.",
        "A 2008 satellite survey measured Kilimanjaro's summit at about 5,892 metres, within a few metres of "
        "the official 5,895-metre figure still used by the Tanzanian authorities.",
        "Kilimanjaro National Park, a UNESCO World Heritage Site since 1987, protects the mountain above "
        "2,700 metres, up to the 5,895-metre summit of Kibo.",
        "Africa's highest point, Kilimanjaro (5,895 m), is one of the Seven Summits. It is lower than "
        "Aconcagua in South America but higher than Mount Elbrus in Europe.",
        "Uhuru Peak, the highest point of Kilimanjaro at 5,895 metres, is marked by a wooden sign "
        "congratulating climbers on reaching the roof of Africa.",
        "Glaciers cap Kilimanjaro's 5,895-metre Kibo summit, but they have lost more than 80 percent of their "
        "area since 1912 and may disappear within a few decades.",
    ),
    "noisy": (
        "Mount Kilimanjaro lies in northeastern Tanzania near the Kenyan border. The nearby town of Moshi is "
        "the usual starting point for tourists who book guided treks.",
        "Mount Kenya, Africa's second-highest mountain at 5,199 metres, is often confused with Kilimanjaro, "
        "although the two peaks stand in different countries.",
        "The name Kilimanjaro has uncertain origins: some link it to Swahili words for mountain and "
        "whiteness, others to a Chagga phrase about a climb that cannot be completed.",
        "Trekking companies offer Kilimanjaro packages of different lengths. Prices depend on the route, the "
        "group size, the park fees and the number of porters hired.",
        "Ernest Hemingway's short story The Snows of Kilimanjaro, published in 1936, follows a dying writer "
        "on safari and made the mountain famous among readers.",
        "The lower slopes of Kilimanjaro are farmed by the Chagga people, who grow coffee and bananas in the "
        "fertile volcanic soil of the southern foothills.",
        "Altitude sickness is the main risk on the mountain. Guides advise climbers to walk slowly, drink "
        "plenty of water and descend at once if headaches grow worse.",
        "Weather on Kilimanjaro changes quickly with elevation. The best months to climb are said to be "
        "January to March and June to October, outside the rainy seasons.",
        "Mount Meru, Kilimanjaro's smaller neighbour in Arusha National Park, is a popular acclimatisation "
        "climb before an attempt on the bigger mountain.",
        "Elephants, buffalo and colobus monkeys live in the montane forest belt around Kilimanjaro, which "
        "receives most of the rain that falls on the mountain.",
    ),
}

_NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
                 "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen",
                 "nineteen", "twenty")


def number_word(n: int) -> str:
    """'five' for 5 (the paper's wording, which tuned simulators expect), digits beyond twenty."""
    return _NUMBER_WORDS[n] if 0 <= n < len(_NUMBER_WORDS) else str(n)


def prompt_answer(golden_answers: list[str] | None) -> str | None:
    """The gold answer shown to the simulator: the first non-empty one only.

    As in the paper: the prompt names one answer ("whose answer is A"); the other gold strings are
    aliases of the same answer, and a list would make the prompt differ from the one the simulator was
    tuned on and invite it to copy the list into every document.
    """
    for a in golden_answers or ():
        if isinstance(a, str) and a.strip():
            return a.strip()
    return None


def render_documents(docs: list[str] | list[ParsedDoc]) -> str:
    """The simulator's output format, `Doc i: text` (with `(Title: t)` when a title is known).

    Used for the worked example and by the simulation-tuning pipeline for its targets, so that what a
    tuned simulator learns to write is exactly what `parse_documents` reads.
    """
    lines = []
    for i, d in enumerate(docs, start=1):
        title, text = (d.title, d.text) if isinstance(d, ParsedDoc) else ("", d)
        lines.append(f"Doc {i} (Title: {title}): {text}" if title else f"Doc {i}: {text}")
    return "\n".join(lines)


def render_sim_prompt(query: str, k: int, mode: DocMode, question: str | None = None, answer: str | None = None,
                      *, words: int = 30, family: SimFamily = "prompt") -> str:
    """The simulator's user message for one query.

    With `question` and `answer` the simulator is told the user's question and gold answer (training);
    with neither it is answer-blind (evaluation). Giving only one of them is an error, never a silent
    switch to answer-blind.
    """
    if mode not in ("useful", "noisy"):
        raise ValueError(f"mode must be 'useful' or 'noisy', got {mode!r}")
    if family not in SIM_FAMILIES:
        raise ValueError(f"family must be one of {SIM_FAMILIES}, got {family!r}")
    if k < 1 or words < 1:
        raise ValueError(f"k and words must be >= 1, got k={k}, words={words}")
    if (question is None) != (answer is None):
        raise ValueError("give both question and answer (gold-aware prompt) or neither (answer-blind prompt)")
    blind = question is None
    if not blind and not (question.strip() and answer.strip()):
        raise ValueError("question and answer must be non-empty")
    label = mode.capitalize()
    kw = number_word(k)
    parts = [HEAD, TASK[family].format(k=kw, mode=mode)]
    if family == "prompt":
        shown = list(EXAMPLE_DOCS[mode][:k])
        parts.append(EXAMPLE.format(query=EXAMPLE_QUERY, label=label, documents=render_documents(shown)))
    parts.append("\n" if blind else CONTEXT.format(question=question.strip(), answer=answer.strip()))
    if family == "prompt" and not blind:
        parts.append(GOAL[mode])
    parts.append(LENGTH.format(words=words, mode=mode))
    if family == "prompt":
        parts.append(ONLY.format(k=kw))
    parts.append(QUERY.format(query=query.strip(), label=label))
    return "".join(parts)


def stop_strings(k: int) -> list[str]:
    """Where generation may stop: the start of document k+1 (the output is cut there anyway)."""
    return [f"Doc {k + 1}", f"Document {k + 1}"]


# --- Parsing --------------------------------------------------------------------------------------------


class ParsedDoc(NamedTuple):
    title: str
    text: str


@dataclass
class ParseInfo:
    """What `parse_documents` had to repair in one output (all zero for a clean `Doc 1: ...` list)."""

    preamble: int = 0  # text before the first document, dropped
    trailing: int = 0  # text after a document (chatter, an echoed "Query:" block), dropped
    unnumbered: int = 0  # no "Doc N" markers: split on list numbers, blank lines or lines instead
    renumbered: int = 0  # markers not numbered 1, 2, 3, ... (skipped or repeated numbers)
    empty: int = 0  # documents with no text, dropped
    extra: int = 0  # documents beyond k, cut (the reference cuts at "Doc k+1")
    missing: int = 0  # k minus the documents found

    def repairs(self) -> dict[str, int]:
        return {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name)}


# "Doc 3:", "Document 3.", "**Doc 3:**", "### Doc 3", "Doc 3 (Title: x):", "Doc 3(Title: x) text".
_DOC_MARK = re.compile(
    r"(?P<lead>^[ \t]*(?:[-*#>]+[ \t]*)?|(?<=[\s.!?\"')]))"
    r"(?:\*\*|__)?(?:doc(?:ument)?)[ \t]*#?[ \t]*(?P<num>\d{1,3})\b"
    r"(?:[ \t]*\([ \t]*title[ \t]*:[ \t]*(?P<title>[^)\n]*)\))?"
    r"(?:\*\*|__)?[ \t]*(?P<punct>[:.)\-\u2013\u2014])?(?:\*\*|__)?",
    re.I | re.M,
)
# Plain list markers at a line start: "1.", "2)", "[3]", "**4.**" (one or two digits: not a year).
_LIST_MARK = re.compile(
    r"^[ \t]*(?:[-*#>]+[ \t]*)?(?:\*\*)?(?:\[(?P<a>\d{1,2})\]|\(?(?P<b>\d{1,2})[.)])(?:\*\*)?[ \t]+", re.M)
# A leading "Title: x" line or a bold "**x**" heading inside a document.
_TITLE_LINE = re.compile(r"^(?:title[ \t]*:[ \t]*(?P<t1>[^\n]+)\n|\*\*(?P<t2>[^*\n]{1,150})\*\*[ \t]*:?[ \t]*)", re.I)
# Lines that end a document: the prompt's own labels echoed back, or a note to the user.
_TRAILER = re.compile(r"^[ \t]*(?:query|useful output|noisy output|output|note)[ \t]*:", re.I | re.M)
_BLANK = re.compile(r"\n[ \t]*\n")


def _doc_marks(text: str) -> list[re.Match[str]]:
    marks = []
    for m in _DOC_MARK.finditer(text):
        at_line_start = m.group("lead") is not None and (m.start() == 0 or text[m.start() - 1] == "\n")
        # Inside running text "Doc 3" is a document only when it is labelled like one.
        if at_line_start or m.group("punct") == ":" or m.group("title") is not None:
            marks.append(m)
    return marks


def _clean(body: str, info: ParseInfo) -> ParsedDoc | None:
    """One document's text: title pulled out, trailing chatter dropped, whitespace collapsed."""
    body = body.strip()
    title = ""
    m = _TITLE_LINE.match(body)
    if m:
        title = (m.group("t1") or m.group("t2")).strip()
        body = body[m.end():].strip()
    cut = _TRAILER.search(body)
    if cut:
        body, info.trailing = body[: cut.start()], info.trailing + 1
    paragraphs = [p for p in _BLANK.split(body.strip()) if p.strip()]
    if len(paragraphs) > 1:  # a document is one paragraph; what follows a blank line is not part of it
        info.trailing += 1
    text = " ".join(paragraphs[0].split()) if paragraphs else ""
    text = text.strip("*_ ").strip()
    if not text:
        info.empty += 1
        return None
    return ParsedDoc(title, text)


def parse_documents(text: str, k: int) -> tuple[list[ParsedDoc], ParseInfo]:
    """Read up to k documents from a simulator's output, repairing what can be repaired.

    Preferred: `Doc N:` markers (also `Document N.`, bold or heading forms, `(Title: x)`), anywhere.
    Without them: numbered list items, then blank-line paragraphs, then lines. Everything dropped or
    fixed is counted in the returned `ParseInfo`.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    info = ParseInfo()
    text = (text or "").replace("\r\n", "\n")
    marks = _doc_marks(text)
    spans: list[tuple[int, int, str]] = []  # (number, body start, title from the marker)
    if marks:
        numbers = [int(m.group("num")) for m in marks]
        spans = [(n, m.end(), (m.group("title") or "").strip()) for n, m in zip(numbers, marks)]
        starts = [m.start() for m in marks]
    else:
        lm = list(_LIST_MARK.finditer(text))
        if lm:
            info.unnumbered = 1
            numbers = [int(m.group("a") or m.group("b")) for m in lm]
            spans = [(n, m.end(), "") for n, m in zip(numbers, lm)]
            starts = [m.start() for m in lm]
    if spans:
        if text[: starts[0]].strip():
            info.preamble = 1
        if numbers != list(range(1, len(numbers) + 1)):
            info.renumbered = 1
        bodies = [(title, text[s: (starts[i + 1] if i + 1 < len(starts) else len(text))])
                  for i, (_, s, title) in enumerate(spans)]
    else:
        info.unnumbered = 1 if text.strip() else 0
        chunks = [p for p in _BLANK.split(text) if p.strip()]
        if len(chunks) == 1:
            chunks = [line for line in chunks[0].split("\n") if line.strip()]
        if len(chunks) > 1 and chunks[0].rstrip().endswith(":"):  # "Here are five documents:"
            chunks, info.preamble = chunks[1:], 1
        bodies = [("", c) for c in chunks]
    docs: list[ParsedDoc] = []
    for marker_title, body in bodies:
        if len(docs) == k:
            info.extra += 1
            continue
        doc = _clean(body, info)
        if doc is not None:
            docs.append(ParsedDoc(marker_title or doc.title, doc.text))
    info.missing = k - len(docs)
    return docs, info
