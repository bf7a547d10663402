"""Property-based tests (Hypothesis) of the code that reads what models, users and files write.

- the rollout's tag parser (`rollout._ACTION`) and `reward.extract_answer` / `is_valid_format`: any string,
  the first complete block as the protocol defines it, round trips of well-formed turns;
- the whole rollout, scripted: for any interleaving of searches, invalid actions, answers, EOS and budget
  cuts, the loss mask is 1 on exactly the policy's tokens, and only an answering row has an answer;
- `Trajectory.add_generated` / `add_inserted` and `collate`: the mask never marks an inserted token;
- the simulator's document parser (`sim_prompts.parse_documents`): any text, and render -> parse;
- the QA reader (`data.read_qa` / `load_qa`) and the corpus reader (`engines.corpus.Corpus.scan`): any
  bytes give rows or a ValueError naming the file and line, never another exception;
- the config loader (`config.load_train_config`): any YAML, any overrides: a TrainConfig or a ValueError;
- the reward: EM/F1 in [0, 1], F1 and EM symmetric, `normalize_answer` idempotent.

Hypothesis runs the "ci" profile of tests/conftest.py (derandomized: the same examples every run).
Example counts are set per test (`settings(max_examples=...)`); the file runs in well under 30 s.
"""

from __future__ import annotations

import json
import re
import string
import tempfile
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import yaml
from hypothesis import event, given, settings
from hypothesis import strategies as st

from zerosearch.training.config import TrainConfig, load_train_config
from zerosearch.data.qa import DataError, QARecord, load_qa, read_qa
from zerosearch.engines.base import Document, SearchEngine, format_documents
from zerosearch.engines.corpus import Corpus, passage
from zerosearch.engines.sim_prompts import ParsedDoc, parse_documents, render_documents
from zerosearch.agent.generation import GenOutput
from zerosearch.prompts import FORCE_ANSWER, INVALID_ACTION
from zerosearch.reward import (
    cover_exact_match,
    exact_match,
    extract_answer,
    f1_reward,
    f1_score,
    is_valid_format,
    normalize_answer,
)
from zerosearch.agent.rollout import _ACTION, RolloutConfig, Trajectory, collate, information_ids, rollout

TAGS = ("search", "answer", "think", "information")

# Tag soup: the protocol's tags, their pieces and ordinary text, in any order.
_fragments = st.sampled_from([f"<{t}>" for t in TAGS] + [f"</{t}>" for t in TAGS] + [
    "<", ">", "/", "<answ", "er>", "</", "search", "answer", " ", "\n", "Paris", "a", "b", "é", "\x00"])
tag_soup = st.lists(st.one_of(_fragments, st.text(max_size=3)), max_size=25).map("".join)
# Text with no tag of the protocol in it (the content of a well-formed block).
plain = st.text(st.characters(exclude_characters="<>"), max_size=20)


def first_block(text: str) -> tuple[str, str] | None:
    """The protocol's action, written out: the leftmost `<tag>` (search or answer) whose first `</tag>`
    comes before any other `<tag>` of the same kind; (tag, content between)."""
    for i in range(len(text)):
        for tag in ("search", "answer"):
            opening = f"<{tag}>"
            if text.startswith(opening, i):
                start = i + len(opening)
                close, again = text.find(f"</{tag}>", start), text.find(opening, start)
                if close != -1 and (again == -1 or again >= close):
                    return tag, text[start:close]
    return None


# --- the tag parser -------------------------------------------------------------------------------------


@settings(max_examples=400)
@given(text=st.one_of(tag_soup, st.text()))
def test_any_string_parses_without_raising_and_as_the_protocol_says(text):
    m = _ACTION.search(text)
    assert (None if m is None else (m.group(1), m.group(2))) == first_block(text)
    answer = extract_answer(text)
    if answer is not None:
        assert answer == answer.strip() and "<answer>" not in answer and "</answer>" not in answer
        assert "<answer>" in text and "</answer>" in text
    valid = is_valid_format(text)
    assert isinstance(valid, bool)
    if valid:
        assert answer is not None and text.rstrip().endswith("</answer>")


@settings(max_examples=300)
@given(history=tag_soup, answer=plain, tail=st.sampled_from(["", " ", "\n"]))
def test_the_last_answer_block_is_read_whatever_came_before(history, answer, tail):
    # The round trip the reward depends on: a final `<answer> A </answer>` is read as A, after any text,
    # an unclosed `<answer>` in it included (the bug this found: "x<answer> A" was read instead).
    assert extract_answer(history + "<answer>" + answer + "</answer>" + tail) == answer.strip()


_no_close = tag_soup.filter(lambda s: "</search>" not in s and "</answer>" not in s)


@settings(max_examples=300)
@given(before=_no_close, action=st.sampled_from(["search", "answer"]), content=plain)
def test_a_well_formed_turn_round_trips(before, action, content):
    # What generation produces: any text, then one block, stopped at its closing tag.
    turn = f"{before}<{action}>{content}</{action}>"
    m = _ACTION.search(turn)
    assert m is not None and (m.group(1), m.group(2).strip()) == (action, content.strip())


@settings(max_examples=200)
@given(turns=st.lists(st.tuples(plain, plain, plain), max_size=4), thought=plain, answer=plain)
def test_a_well_formed_trajectory_is_valid_and_answers(turns, thought, answer):
    text = "".join(f"<think>{t}</think>\n<search>{q}</search>\n\n<information>{d}</information>\n\n"
                   for t, q, d in turns) + f"<think>{thought}</think>\n<answer>{answer}</answer>\n"
    assert is_valid_format(text) and extract_answer(text) == answer.strip()
    assert not is_valid_format(text + "more")  # nothing may follow the final answer
    assert not is_valid_format(text.replace("</answer>", ""))  # nor an answer be left open


# --- the rollout, scripted: the loss mask and the answer ------------------------------------------------


class CharTokenizer:
    """One token per character (id = code point); id 0 is the EOS."""

    chat_template = None
    eos_token_id = 0
    eos_token = "\x00"

    def __call__(self, text: str, add_special_tokens: bool = False) -> SimpleNamespace:
        return SimpleNamespace(input_ids=[ord(c) for c in text])

    def decode(self, ids: list[int], skip_special_tokens: bool = False) -> str:
        return "".join(chr(i) for i in ids)


TOK = CharTokenizer()


class ScriptBackend:
    """Each row's turns from a script, as a real backend returns them: cut after the first stop string
    (`stop`), else at max_new_tokens (`length`), else ended by an EOS when the script says so (`eos`)."""

    def __init__(self, script: dict[str, list[tuple[str, bool]]]):
        self.script, self.turn = script, dict.fromkeys(script, 0)
        self.outputs: dict[str, list[str]] = {q: [] for q in script}

    def generate(self, prompts, max_new_tokens, stop_strings, temperature, top_p, seed):
        outs = []
        for p in prompts:
            q = next(q for q in self.script if f"Question: {q}\n" in TOK.decode(p))
            text, eos = self.script[q][min(self.turn[q], len(self.script[q]) - 1)]
            self.turn[q] += 1
            cut = min((text.find(s) + len(s) for s in stop_strings if s in text), default=None)
            if cut is not None:
                text, reason = text[:cut], "stop"
            elif eos:
                text, reason = text + TOK.eos_token, "eos"
            else:
                reason = "length"
            if len(text) > max_new_tokens:
                text, reason = text[:max_new_tokens], "length"
            self.outputs[q].append(text)
            ids = TOK(text).input_ids
            outs.append(GenOutput(ids, text, reason, [-0.5] * len(ids)))
        return outs


class TaggedEngine(SearchEngine):
    """Documents that carry answer tags of their own: a retrieved `<answer>` must never be scored."""

    name = "tagged"

    def search(self, requests):
        return [[Document(title="t", text=f"<answer> {r.golden_answers[0]} </answer> about {r.query}",
                          source="tagged")] for r in requests]


_search_turn = st.builds(lambda a, q: f"{a}<search>{q}</search>", plain,
                         st.one_of(plain, st.text(string.ascii_letters, min_size=1, max_size=8)))
_turn_text = st.one_of(
    _search_turn, _search_turn,
    st.builds(lambda a, q: f"{a}<answer>{q}</answer>", plain, st.sampled_from(["Paris", " Paris ", "Lyon", ""])),
    st.builds(lambda a, b: f"{a}<answer>{b}", plain, plain),  # an answer cut off (or never closed)
    st.builds(lambda a: f"{a}</answer>", plain),  # ... closed in a later turn
    tag_soup)
_scripts = st.lists(st.tuples(_turn_text, st.integers(0, 4).map(lambda x: x == 0)), min_size=1, max_size=6)


@settings(max_examples=300)
@given(scripts=st.lists(_scripts, min_size=1, max_size=3), max_turns=st.integers(1, 4),
       per_turn=st.integers(5, 200), total=st.integers(800, 3000), obs=st.integers(32, 200),
       format_weight=st.sampled_from([0.0, 0.2]))
def test_for_any_turns_the_mask_is_exactly_the_policys_tokens(scripts, max_turns, per_turn, total, obs,
                                                              format_weight):
    questions = [f"Q{i}?" for i in range(len(scripts))]
    backend = ScriptBackend(dict(zip(questions, scripts)))
    cfg = RolloutConfig(max_turns=max_turns, max_new_tokens_per_turn=per_turn, max_prompt_tokens=690,
                        max_total_tokens=total, max_obs_tokens=obs, k=1, format_weight=format_weight)
    records = [QARecord(id=f"r{i}", question=q, golden_answers=["Paris"], data_source="t")
               for i, q in enumerate(questions)]
    for t in rollout(records, backend, TOK, TaggedEngine(), cfg):
        event(f"end={t.end}, searches={min(t.searches, 2)}, invalid={min(t.invalid_actions, 2)}")
        assert len(t.info_mask) == len(t.response_ids) == len(t.sampler_logprobs)
        assert len(t.prompt_ids) + len(t.response_ids) <= total
        policy = TOK.decode([x for x, m in zip(t.response_ids, t.info_mask) if m])
        inserted = TOK.decode([x for x, m in zip(t.response_ids, t.info_mask) if not m])
        outputs = backend.outputs[t.question]
        # Mask 1: what the backend returned for this row, the last output possibly cut at the budget.
        assert policy.startswith("".join(outputs[:-1])) and outputs[-1].startswith(policy[len("".join(outputs[:-1])):])
        # Mask 0: only what the rollout inserts, in order, the last piece possibly cut at the budget.
        blocks = [TOK.decode(information_ids(format_documents(d), TOK, obs)[0]) for d in t.documents]
        rest = inserted
        while rest:
            piece = next((p for p in (INVALID_ACTION, FORCE_ANSWER, *blocks[:1]) if rest.startswith(p)), None)
            if piece is None:  # a budget cut: the response ends inside the last piece
                assert any(p.startswith(rest) for p in (INVALID_ACTION, FORCE_ANSWER, *blocks[:1])), rest[:80]
                assert len(t.prompt_ids) + len(t.response_ids) == total
                break
            if blocks and piece == blocks[0]:
                blocks.pop(0)
            rest = rest[len(piece):]
        assert all(lp == 0.0 for lp, m in zip(t.sampler_logprobs, t.info_mask) if not m)
        # The answer is the answering turn's own block, never a retrieved one; no answer, no reward.
        if t.finished:
            m = _ACTION.search(outputs[-1])
            assert m.group(1) == "answer" and t.answer == m.group(2).strip()
            assert t.reward == f1_reward(policy, ["Paris"], format_weight=format_weight)
        else:
            assert t.answer is None and t.reward == 0.0 and t.metrics["em"] == 0.0


# --- Trajectory and collate -----------------------------------------------------------------------------

_pieces = st.lists(st.one_of(
    st.tuples(st.just("gen"), st.lists(st.integers(0, 999), max_size=8), st.booleans()),
    st.tuples(st.just("ins"), st.lists(st.integers(1000, 1999), max_size=8), st.just(False))), max_size=12)


def _trajectory(prompt_len: int, pieces: list, cfg: RolloutConfig) -> tuple[Trajectory, int, bool]:
    t = Trajectory(row_id="r", group_id=0, sample=0, data_source="d", question="q", golden_answers=["a"],
                   prompt_ids=list(range(2000, 2000 + prompt_len)))
    dropped, logprobs_kept = 0, True
    for kind, ids, with_logprobs in pieces:
        if kind == "gen":  # generated ids are 0..999, inserted ones 1000..1999
            t.add_generated(ids, [-float(i) / 1000 for i in ids] if with_logprobs else None)
            logprobs_kept &= with_logprobs
        else:
            room = max(t.room(cfg), 0)
            t.add_inserted(ids, cfg)
            dropped += max(len(ids) - room, 0)
    return t, dropped, logprobs_kept


@settings(max_examples=300)
@given(batch=st.lists(st.tuples(st.integers(1, 6), _pieces), min_size=1, max_size=4), total=st.integers(8, 40))
def test_no_inserted_token_is_ever_marked_trained(batch, total):
    cfg = RolloutConfig(max_prompt_tokens=7, max_total_tokens=total)
    trajs = []
    for prompt_len, pieces in batch:
        t, dropped, logprobs_kept = _trajectory(prompt_len, pieces, cfg)
        assert len(t.info_mask) == len(t.response_ids)
        assert t.info_mask == [int(x < 1000) for x in t.response_ids]  # 1 exactly on generated ids
        assert t.truncation["budget_tokens"] == dropped
        assert (t.sampler_logprobs is not None) == logprobs_kept
        if t.sampler_logprobs is not None:
            assert len(t.sampler_logprobs) == len(t.response_ids)
            assert all(lp == 0.0 for lp, x in zip(t.sampler_logprobs, t.response_ids) if x >= 1000)
        trajs.append(t)
    out = collate(trajs, pad_id=-1)
    P = max(len(t.prompt_ids) for t in trajs)
    for b, t in enumerate(trajs):
        r = len(t.response_ids)
        assert out["response_mask"][b].sum().item() == r
        assert out["info_mask"][b, :r].tolist() == t.info_mask and out["info_mask"][b, r:].sum().item() == 0
        assert out["input_ids"][b, P: P + r].tolist() == t.response_ids
        assert out["input_ids"][b, P - len(t.prompt_ids): P].tolist() == t.prompt_ids
        trained = out["input_ids"][b, P:][out["info_mask"][b].bool()]
        assert (trained < 1000).all()  # what gets gradient was generated
        assert out["attention_mask"][b].sum().item() == len(t.prompt_ids) + r
        assert out["position_ids"][b, P - len(t.prompt_ids)].item() == 0
    assert (out["info_mask"] <= out["response_mask"]).all()
    assert ("sampler_logprobs" in out) == all(t.sampler_logprobs is not None for t in trajs)


# --- the simulator's document parser --------------------------------------------------------------------


@settings(max_examples=400)
@given(text=st.one_of(st.text(), tag_soup, st.lists(st.sampled_from(
    ["Doc 1:", "Doc 2:", "Document 3.", "**Doc 1:**", "### Doc 2", "(Title: x)", "1.", "2)", "[3]", "\n", "\n\n",
     "Query:", "Title: t\n", "**T**", " text ", "Note: ", "doc 12", "Useful Output:"]), max_size=20).map("".join)),
       k=st.integers(1, 8))
def test_the_document_parser_reads_any_text(text, k):
    docs, info = parse_documents(text, k)
    assert len(docs) <= k and info.missing == k - len(docs)
    for d in docs:
        assert isinstance(d, ParsedDoc) and d.text and d.text == d.text.strip() and "\n" not in d.text
        assert "\n" not in d.title and d.title == d.title.strip()
    assert all(v >= 0 for v in info.repairs().values())
    with pytest.raises(ValueError):
        parse_documents(text, 0)


_word = st.text(string.ascii_letters + string.digits + ".,;'?!-", min_size=1, max_size=8)
_doc_text = st.lists(_word, min_size=1, max_size=8).map(" ".join).filter(
    lambda s: s.strip("*_ ") == s and not re.search(r"\bdoc(ument)?\b", s, re.I))
_title = st.one_of(st.just(""), st.lists(st.text(string.ascii_letters + string.digits, min_size=1, max_size=6),
                                         min_size=1, max_size=3).map(" ".join))


@settings(max_examples=300)
@given(docs=st.lists(st.builds(ParsedDoc, _title, _doc_text), min_size=1, max_size=6), extra=st.integers(0, 2))
def test_rendered_documents_parse_back(docs, extra):
    # render_documents writes the simulator's targets; parse_documents must read exactly them back.
    parsed, info = parse_documents(render_documents(docs), len(docs) + extra)
    assert parsed == docs and info.repairs() == ({"missing": extra} if extra else {})


# --- the QA and corpus readers --------------------------------------------------------------------------

_json_value = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
                           lambda v: st.lists(v, max_size=3) | st.dictionaries(st.text(max_size=6), v, max_size=3),
                           max_leaves=8)
_qa_row = st.fixed_dictionaries({}, optional={
    "question": st.one_of(st.text(max_size=10), _json_value), "golden_answers": st.one_of(
        st.lists(st.text(max_size=6), max_size=3), _json_value), "answer": _json_value, "id": _json_value,
    "prompt": st.one_of(st.lists(st.fixed_dictionaries({"role": st.sampled_from(["user", "system"]),
                                                        "content": st.text(max_size=20)}), max_size=2),
                        _json_value),
    "reward_model": st.one_of(st.fixed_dictionaries({"ground_truth": _json_value}), _json_value),
    "answers_objects": _json_value, "data_source": _json_value, "extra_info": _json_value})
_line = st.one_of(
    _qa_row.map(lambda r: json.dumps(r).encode()),
    _json_value.map(lambda v: json.dumps(v).encode()),
    st.binary(max_size=30),
    st.sampled_from([b"", b"   ", b"[" * 3000, b'{"id": ' + b"9" * 5000 + b"}", b'{"question": "q\\ud800",'
                     b' "golden_answers": ["a"]}', b"\xef\xbb\xbf{}", b"NaN", b'{"question": "q", "golden_answers": '
                     b'[NaN, Infinity]}', "{\"question\": \"é\"}".encode("utf-16")]))
_jsonl = st.lists(_line, max_size=6).map(b"\n".join)


def _lines(data: bytes) -> list[bytes]:
    return [line for line in data.split(b"\n") if line]


@settings(max_examples=250)
@given(data=_jsonl, suffix=st.sampled_from([".jsonl", ".json"]))
def test_any_bytes_in_a_qa_file_give_rows_or_an_error_naming_file_and_line(data, suffix):
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / f"qa{suffix}"
        path.write_bytes(data)
        try:
            records = read_qa(path)
        except DataError as e:
            message = str(e)
            assert message.startswith(f"{path}: ")
            if suffix == ".jsonl":  # every row error names its line
                line = int(re.match(rf"{re.escape(str(path))}: line (\d+): ", message).group(1))
                assert 1 <= line <= data.count(b"\n") + 1
        else:
            assert all(isinstance(r, QARecord) and r.question and r.golden_answers for r in records)
            assert len({r.id for r in records}) == len(records)
        if suffix == ".jsonl":  # skip_bad never raises: each non-blank line is a record or a skip
            from zerosearch.data.qa import ReadReport

            report = ReadReport(str(path))
            records = read_qa(path, skip_bad=True, report=report)
            blank = sum(1 for line in data.split(b"\n") if _decodes(line) and not line.decode().strip())
            assert report.read == len(records) and report.read + report.skipped == len(data.split(b"\n")) - blank
            same = lambda rs: json.dumps([r.to_dict() for r in rs])  # noqa: E731  (NaN != NaN in extras)
            assert same(load_qa(str(path), skip_bad=True)) == same(records)


def _decodes(line: bytes) -> bool:
    try:
        line.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


@settings(max_examples=60)
@given(data=st.one_of(st.binary(max_size=200), st.just(b"PAR1" + b"\x00" * 12 + b"PAR1")), good=st.booleans())
def test_any_bytes_in_a_parquet_file_give_rows_or_an_error_naming_the_file(data, good):
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq

    if good:  # a real file, damaged: the bytes land in the middle of it
        buf = io.BytesIO()
        pq.write_table(pa.table({"question": ["q1", "q2"], "golden_answers": [["a"], ["b", "c"]]}), buf)
        real = buf.getvalue()
        at = len(data) % max(len(real) - 8, 1)
        data = real[:at] + data[: 16] + real[at + len(data[:16]):]
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "qa.parquet"
        path.write_bytes(data)
        try:
            records = read_qa(path)
        except DataError as e:
            assert str(e).startswith(f"{path}: ")
        else:
            assert all(isinstance(r, QARecord) for r in records)


_passage = st.fixed_dictionaries({"contents": st.text(max_size=20)}, optional={
    "id": st.one_of(st.text(max_size=4), st.integers(0, 5)), "title": st.text(max_size=6)})
_corpus_line = st.one_of(_passage.map(lambda r: json.dumps(r).encode()), _line)


@settings(max_examples=250)
@given(lines=st.lists(_corpus_line, max_size=6), keep_first=st.booleans())
def test_any_bytes_in_a_corpus_give_passages_or_an_error_naming_file_and_line(lines, keep_first):
    data = b"\n".join(lines)
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "corpus.jsonl"
        path.write_bytes(data)
        try:
            corpus, texts, skipped = Corpus.scan(path, duplicate_ids="keep-first" if keep_first else "error")
        except ValueError as e:
            message = str(e)
            m = re.match(rf"{re.escape(str(path))}:(\d+): ", message)
            assert m or message == f"{path}: the corpus has no passages", message
            if m:
                assert 1 <= int(m.group(1)) <= len(lines)
            return
        try:
            rows = [json.loads(line) for line in data.split(b"\n") if line.strip()]
            assert len(corpus) == len(texts) == len(rows) - skipped
            kept: list[tuple[str, str, str]] = []  # what the corpus should hold: first of each id, in order
            for row in rows:
                rid, title, text = passage(row, "row")
                key = rid if rid is not None else str(len(kept))
                if key not in {k for k, _, _ in kept}:
                    kept.append((key, title, text))
            assert len(corpus) == len(kept)
            for i, (key, title, text) in enumerate(kept):  # every passage reads back as it was written
                doc = corpus.doc(i, source="t")
                assert (doc.id, doc.title, doc.text) == (key, title, text)
                assert texts[i] == (f"{title}\n{text}" if title else text)
        finally:
            corpus.close()


# --- the config loader ----------------------------------------------------------------------------------

_FIELDS = {name: list(getattr(TrainConfig.model_fields[name].annotation, "model_fields", {}) or [])
           for name in TrainConfig.model_fields}
_FIELDS.update(engine=["name", "k", "corpus", "model", "leak_guard", "answer_blind", "timeout"],
               algorithm=["name", "clip_eps", "kl_loss_coef", "gamma", "lam"])
_scalar = st.one_of(st.none(), st.booleans(), st.integers(-3, 10**6), st.floats(), st.text(max_size=6),
                    st.sampled_from(["grpo", "ppo", "bm25", "simulated", "world", "auto", "hf", "fp32", "1e-5"]))
_value = st.recursive(_scalar, lambda v: st.lists(v, max_size=3) | st.dictionaries(st.text(max_size=4), v,
                                                                                     max_size=2), max_leaves=4)
_section = st.dictionaries(st.one_of(st.sampled_from(sum(_FIELDS.values(), [])), st.text(max_size=5)), _value,
                           max_size=4)
_config = st.dictionaries(st.one_of(st.sampled_from(list(_FIELDS)), st.text(max_size=5)),
                          st.one_of(_section, _value), max_size=4)
_key = st.one_of(st.builds(lambda s, f: f"{s}.{f}", st.sampled_from(list(_FIELDS)),
                           st.sampled_from(sum(_FIELDS.values(), []))), st.text(max_size=8))
_override = st.one_of(st.builds(lambda k, v: f"{k}={v}", _key, st.one_of(
    _scalar.map(lambda v: yaml.safe_dump(v).removesuffix("\n...\n").strip()), st.text(max_size=8),
    st.sampled_from(["[unclosed", "{a: ", "!!python/object:os.system x", "a: b: c", "[" * 600, "&a [*a]"]))),
    st.text(max_size=10))


@settings(max_examples=200)
@given(config=st.one_of(_config.map(lambda c: yaml.safe_dump(c).encode()), st.binary(max_size=40),
                        st.sampled_from([b"", b"- 1\n", b"\xff\xfe", b"[" * 600, b"a: &x [*x]", b"train: {steps: 0}"])),
       overrides=st.lists(_override, max_size=3))
def test_any_yaml_and_overrides_give_a_config_or_a_clear_error(config, overrides):
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "c.yaml"
        path.write_bytes(config)
        try:
            cfg = load_train_config(path, overrides)
        except ValueError as e:
            message = str(e)
            assert message.startswith((f"{path}: ", "override ")), message
            assert "Traceback" not in message and message.strip()
        else:
            assert isinstance(cfg, TrainConfig)


@settings(max_examples=100)
@given(steps=st.integers(-5, 10**9), lr=st.floats(1e-9, 1.0), n=st.integers(1, 64))
def test_overrides_land_where_they_say(steps, lr, n):
    overrides = [f"train.steps={steps}", f"optim.lr={lr!r}", f"rollout.n={n}", "algorithm.name=ppo"]
    if steps < 1:
        with pytest.raises(ValueError, match="train.steps"):
            load_train_config(None, overrides)
        return
    cfg = load_train_config(None, overrides)
    assert (cfg.train.steps, cfg.optim.lr, cfg.rollout.n, cfg.algorithm["name"]) == (steps, lr, n, "ppo")


# --- the reward -----------------------------------------------------------------------------------------

_answer_text = st.one_of(st.text(max_size=20), st.lists(st.sampled_from(
    ["Paris", "paris", "the", "a", "an", "yes", "no", "noanswer", "Eiffel", "Tower", ",", ".", "!", " ", "  ",
     "The", "A", "city", "1889", "é", "ß", "İ"]), max_size=6).map(" ".join))


@settings(max_examples=500)
@given(prediction=st.one_of(st.none(), _answer_text), golds=st.lists(_answer_text, max_size=3))
def test_em_f1_and_cover_em_are_in_0_1_and_ordered(prediction, golds):
    em, f1, cover = exact_match(prediction, golds), f1_score(prediction, golds), cover_exact_match(prediction, golds)
    assert all(0.0 <= x <= 1.0 for x in (em, f1, cover))
    if prediction is None or not golds:
        assert em == f1 == cover == 0.0
    if em == 1.0 and normalize_answer(prediction):  # the same non-empty tokens: full F1, and covered
        assert f1 == 1.0 and cover == 1.0


@settings(max_examples=500)
@given(a=_answer_text, b=_answer_text)
def test_f1_and_em_are_symmetric(a, b):
    assert f1_score(a, [b]) == f1_score(b, [a])
    assert exact_match(a, [b]) == exact_match(b, [a])


@settings(max_examples=500)
@given(s=st.one_of(st.text(), _answer_text))
def test_normalize_answer_is_idempotent(s):
    once = normalize_answer(s)
    assert normalize_answer(once) == once
    assert once == once.strip() and "  " not in once and not set(once) & set(string.punctuation)
    assert exact_match(s, [once]) == 1.0 and exact_match(once, [s]) == 1.0


@settings(max_examples=300)
@given(response=st.one_of(tag_soup, st.text()), golds=st.lists(_answer_text, min_size=1, max_size=3),
       weight=st.sampled_from([0.0, 0.1, 0.5]))
def test_the_training_reward_is_in_0_1(response, golds, weight):
    r = f1_reward(response, golds, format_weight=weight)
    assert 0.0 <= r <= 1.0
    if extract_answer(response) is None:
        assert r == 0.0 or (weight > 0 and r == weight and is_valid_format(response))


# --- regressions: what the properties above found, one test each ---------------------------------------


def test_an_unclosed_answer_tag_does_not_swallow_the_answer():
    # test_the_last_answer_block_is_read_whatever_came_before: "<answer>" + "<answer></answer>" read as
    # "<answer>"; a thought that mentions the tag cost the right answer its EM.
    assert extract_answer("<think>put it in <answer> tags</think> <answer> Paris </answer>") == "Paris"
    assert extract_answer("<answer> Par<answer> Paris </answer>") == "Paris"
    assert f1_reward("<think> the <answer> is </think><answer> Paris </answer>", ["Paris"]) == 1.0
    m = _ACTION.search("<search> first try <search> capital of France </search>")
    assert (m.group(1), m.group(2).strip()) == ("search", "capital of France")


def test_an_answer_opened_in_a_cut_turn_and_closed_later_is_no_answer():
    # test_for_any_turns_the_mask_is_exactly_the_policys_tokens: turn 1 "<answer> Paris" cut at its token
    # budget (invalid), the forced last turn " so </answer>" (no answer either): the row never answered,
    # yet the joined policy text was read as answering "Paris so", F1 0.67.
    backend = ScriptBackend({"Q0?": [("<answer> Paris is the one I think of", False), (" so </answer>", False)]})
    cfg = RolloutConfig(max_turns=1, max_new_tokens_per_turn=14, max_prompt_tokens=690, max_total_tokens=2000, k=1)
    [t] = rollout([QARecord(id="r", question="Q0?", golden_answers=["Paris"], data_source="t")], backend, TOK,
                  TaggedEngine(), cfg)
    assert backend.outputs["Q0?"] == ["<answer> Paris", " so </answer>"] and t.invalid_actions == 2
    assert t.end == "no_answer" and t.answer is None and t.reward == 0.0 and t.metrics["f1"] == 0.0


def _read(tmp_path: Path, name: str, data: bytes) -> Any:
    path = tmp_path / name
    path.write_bytes(data)
    return path


@pytest.mark.parametrize("line, problem", [(b"[" * 3000, "nested too deeply"),
                                           (b'{"id": ' + b"9" * 5000 + b"}", "Exceeds the limit (4300 digits)")],
                         ids=["too-deep", "5000-digit-int"])
def test_json_that_python_cannot_read_is_a_data_error_naming_file_and_line(tmp_path, line, problem):
    # Found by the reader properties: RecursionError (not a ValueError) and a ValueError naming neither
    # file nor line, from the JSONL and JSON QA readers and the corpus reader; with skip_bad the line is
    # skipped, as any bad line is.
    good = b'{"question": "q", "golden_answers": ["a"]}'
    path = _read(tmp_path, "qa.jsonl", good + b"\n" + line + b"\n")
    with pytest.raises(DataError, match=rf"^{re.escape(str(path))}: line 2: invalid JSON \({re.escape(problem)}"):
        read_qa(path)
    assert len(read_qa(path, skip_bad=True)) == 1
    path = _read(tmp_path, "qa.json", line)
    with pytest.raises(DataError, match=rf"^{re.escape(str(path))}: invalid JSON \({re.escape(problem)}"):
        read_qa(path)
    path = _read(tmp_path, "corpus.jsonl", b'{"contents": "x"}\n' + line + b"\n")
    with pytest.raises(ValueError, match=rf"^{re.escape(str(path))}:2: invalid JSON \({re.escape(problem)}"):
        Corpus.scan(path)


def test_a_corrupt_parquet_file_is_a_data_error_naming_it(tmp_path):
    # Found by test_any_bytes_in_a_parquet_file...: OSError "Couldn't deserialize thrift" (not a
    # ValueError), and ArrowInvalid messages that named no file.
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq

    buf = io.BytesIO()
    pq.write_table(pa.table({"question": ["q"], "golden_answers": [["a"]]}), buf)
    real = buf.getvalue()
    for data in (real[:4] + b"\x00" * 40 + real[44:], b"not parquet", real[:-3]):
        path = _read(tmp_path, "qa.parquet", data)
        with pytest.raises(DataError, match=rf"^{re.escape(str(path))}: not a readable parquet file \("):
            read_qa(path)
    assert [r.question for r in read_qa(_read(tmp_path, "ok.parquet", real))] == ["q"]


@pytest.mark.parametrize("data, overrides, message", [
    (b"model:\n  name: \xff\n", [], r": line 2: not valid UTF-8 \(byte 0xff\)"),
    (b"[" * 600, [], r": not valid YAML: nested too deeply"),
    (b"algorithm: {name: grpo, clip_ratio: 0.2}\n", [], r"grpo: unknown hyper-parameter\(s\) clip_ratio; known: adv_eps"),
    (b"engine: {name: bm25, k: five}\n", [], r"engine k must be an integer >= 1, got 'five'"),
    (b"", ["engine.k=[3]"], r"engine k must be an integer >= 1, got \[3\]"),
    (b"", ["model.name=[unclosed"], r"^override 'model.name=\[unclosed': the value is not valid YAML \("),
    (b"", ["model.name=!!python/object:os.system x"], r"^override .*: the value is not valid YAML \(could not determine"),
], ids=["not-utf8", "too-deep", "unknown-hyper-parameter", "engine-k-type", "override-k-type", "override-not-yaml",
        "override-unsafe-tag"])
def test_a_config_the_loader_cannot_use_is_a_clear_value_error(tmp_path, data, overrides, message):
    # Found by test_any_yaml_and_overrides...: UnicodeDecodeError without the file, RecursionError, and
    # TypeError / yaml errors escaping as tracebacks.
    path = _read(tmp_path, "c.yaml", data)
    with pytest.raises(ValueError, match=message) as e:
        load_train_config(path, overrides)
    assert type(e.value) is ValueError and (str(e.value).startswith(f"{path}: ") or overrides)
