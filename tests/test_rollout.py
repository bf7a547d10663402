"""The multi-turn rollout: control flow with a scripted backend and a fake engine (deterministic), then
real generation with the tiny random model, the logprob recomputation, and the vLLM backend's interface.
"""

from __future__ import annotations

import sys
import types
from collections.abc import Sequence
from typing import Any

import pytest
import torch

from fakes import logprob_atol
from zerosearch.data.qa import QARecord
from zerosearch.engines.base import Document, SearchEngine, SearchRequest, format_documents
from zerosearch.agent.generation import STOP_STRINGS, GenOutput, HFBackend, VLLMBackend, first_stop
from zerosearch.prompts import FORCE_ANSWER, INFORMATION, INVALID_ACTION
from zerosearch.agent.rollout import RolloutConfig, collate, compute_logprobs, encode_prompt, rollout


@pytest.fixture(scope="module")
def tiny() -> tuple[Any, Any]:
    from zerosearch.models import load

    model, tok = load("tiny-random", seed=0)
    return model.eval(), tok


@pytest.fixture(scope="module")
def tok(tiny: tuple[Any, Any]) -> Any:
    return tiny[1]


class ScriptedBackend:
    """Returns predetermined text per question and turn. Every row of call t is at turn t, so the script
    is `{question: [turn 0 text, turn 1 text, ...]}`; the row is recognised by its question in the prompt."""

    def __init__(self, tok: Any, script: dict[str, list[str]]):
        self.tok, self.script = tok, script
        self.calls: list[dict[str, Any]] = []

    def generate(self, prompts_token_ids: list[list[int]], max_new_tokens: int, stop_strings: Sequence[str],
                 temperature: float, top_p: float, seed: int) -> list[GenOutput]:
        turn = len(self.calls)
        texts = [self.tok.decode(p) for p in prompts_token_ids]
        questions = [next(q for q in self.script if q in t) for t in texts]
        self.calls.append({"rows": len(prompts_token_ids), "questions": questions, "max_new_tokens": max_new_tokens,
                           "stop": list(stop_strings), "seed": seed, "prompts": texts})
        outs = []
        for q in questions:
            ids = self.tok(self.script[q][turn], add_special_tokens=False).input_ids
            text = self.tok.decode(ids)
            reason = "stop" if text.endswith(tuple(stop_strings)) else "eos" if ids[-1:] == [self.tok.eos_token_id] \
                else "length"
            outs.append(GenOutput(ids, text, reason))
        return outs


class FakeEngine(SearchEngine):
    """Documents that spell out the query and the context they were generated for."""

    name = "fake"

    def __init__(self, doc_text: str | None = None):
        self.calls: list[list[SearchRequest]] = []
        self.doc_text = doc_text

    def search(self, requests: list[SearchRequest]) -> list[list[Document]]:
        self.calls.append(list(requests))
        return [self.docs(r) for r in requests]

    def docs(self, r: SearchRequest) -> list[Document]:
        mode = "noisy" if (r.noise_prob or 0) >= 0.5 else "useful"
        text = self.doc_text or f"{r.query} | {r.question} | {(r.golden_answers or ['?'])[0]}"
        return [Document(title=f"{r.row_id}-{i}", text=text, source="fake", meta={"mode": mode}) for i in range(r.k)]


def rec(i: int, q: str, a: str = "Paris") -> QARecord:
    return QARecord(id=f"nq-{i}", question=q, golden_answers=[a], data_source="nq")


def split_by_mask(t: Any, tok: Any) -> tuple[str, str]:
    keep = [x for x, m in zip(t.response_ids, t.info_mask) if m]
    drop = [x for x, m in zip(t.response_ids, t.info_mask) if not m]
    return tok.decode(keep), tok.decode(drop)


def info(docs_text: str) -> str:
    return INFORMATION.format(documents=docs_text)


# --- control flow (scripted backend) -------------------------------------------------------------------


def test_info_mask_covers_exactly_the_policy_tokens(tok: Any) -> None:
    turns = ["<think>need facts</think> <search> capital of france </search>", "hmm, I am not sure",
             "<search> france capital city </search>", "<think>ok</think> <answer> Paris </answer>"]
    backend, engine = ScriptedBackend(tok, {"Capital of France?": turns}), FakeEngine()
    [t] = rollout([rec(0, "Capital of France?")], backend, tok, engine, RolloutConfig(max_turns=4, k=2))
    docs = [format_documents(engine.docs(r)) for call in engine.calls for r in call]
    policy, inserted = split_by_mask(t, tok)
    assert policy == "".join(turns)
    assert inserted == info(docs[0]) + INVALID_ACTION + info(docs[1])
    assert t.response == turns[0] + info(docs[0]) + turns[1] + INVALID_ACTION + turns[2] + info(docs[1]) + turns[3]
    assert len(t.info_mask) == len(t.response_ids)
    assert (t.turns, t.searches, t.valid_actions, t.invalid_actions) == (4, 2, 3, 1)
    assert t.queries == ["capital of france", "france capital city"] and t.draws == ["useful", "useful"]
    assert t.finished and t.end == "answer" and t.answer == "Paris" and t.reward == 1.0
    assert t.metrics == {"em": 1.0, "cover_em": 1.0, "f1": 1.0}
    assert t.stop_reasons == ["stop", "length", "stop", "stop"]


def test_finished_rows_leave_the_batch_and_one_engine_call_per_turn(tok: Any) -> None:
    script = {"QA?": ["<answer> a </answer>"],
              "QB?": ["<search> b </search>", "<answer> b </answer>"],
              "QC?": ["<search> c1 </search>", "<search> c2 </search>", "<answer> c </answer>"]}
    backend, engine = ScriptedBackend(tok, script), FakeEngine()
    trajs = rollout([rec(i, q) for i, q in enumerate(script)], backend, tok, engine, RolloutConfig(max_turns=4),
                    seed=7)
    assert [c["rows"] for c in backend.calls] == [3, 2, 1]
    assert backend.calls[1]["questions"] == ["QB?", "QC?"] and backend.calls[2]["questions"] == ["QC?"]
    assert [c["stop"] for c in backend.calls] == [list(STOP_STRINGS)] * 3
    assert [c["seed"] for c in backend.calls] == [7000, 7001, 7002]
    assert [[r.query for r in c] for c in engine.calls] == [["b", "c1"], ["c2"]]
    assert [t.turns for t in trajs] == [1, 2, 3] and all(t.finished for t in trajs)
    assert trajs.stats.backend_calls == 3 and trajs.stats.engine_calls == 2
    assert trajs.stats.mean_searches == 1.0 and trajs.stats.valid_action_rate == 1.0


def test_each_query_carries_its_own_rows_context_in_a_mixed_batch(tok: Any) -> None:
    """The reference code looked context up by position among the rows that searched: with row 0 not
    searching, row 1's query got row 0's question and answer. Here each request names its own row."""
    script = {"Who wrote Hamlet?": ["<answer> Shakespeare </answer>"],
              "Capital of Peru?": ["<search> peru capital </search>", "<answer> Lima </answer>"],
              "Tallest mountain?": ["no tags at all", "<answer> Everest </answer>"],
              "Largest ocean?": ["<search> biggest ocean </search>", "<answer> Pacific </answer>"]}
    answers = ["Shakespeare", "Lima", "Everest", "Pacific"]
    records = [rec(i, q, a) for i, (q, a) in enumerate(zip(script, answers))]
    engine = FakeEngine()
    trajs = rollout(records, ScriptedBackend(tok, script), tok, engine, RolloutConfig(max_turns=3, k=3),
                    noise_prob=0.6)
    [call] = engine.calls
    assert [(r.row_id, r.question, r.golden_answers, r.query) for r in call] == [
        ("nq-1", "Capital of Peru?", ["Lima"], "peru capital"), ("nq-3", "Largest ocean?", ["Pacific"], "biggest ocean")]
    assert all(r.noise_prob == 0.6 and r.k == 3 and r.mode is None for r in call)
    assert "peru capital | Capital of Peru? | Lima" in trajs[1].response
    assert "biggest ocean | Largest ocean? | Pacific" in trajs[3].response
    assert trajs[1].draws == ["noisy"] and trajs.stats.draws == {"noisy": 2}
    assert [t.reward for t in trajs] == [1.0] * 4


def test_invalid_action_gets_the_corrective_message_and_counts_as_a_turn(tok: Any) -> None:
    script = {"Q?": ["I will just think out loud", "<search></search>", "<answer> x </answer>"]}
    engine = FakeEngine()
    [t] = rollout([rec(0, "Q?")], ScriptedBackend(tok, script), tok, engine, RolloutConfig(max_turns=3))
    assert split_by_mask(t, tok)[1] == INVALID_ACTION * 2  # an empty query is invalid too
    assert (t.turns, t.invalid_actions, t.valid_actions, t.searches) == (3, 2, 1, 0) and engine.calls == []


def test_an_eos_ends_the_row_and_is_never_followed_by_inserted_text(tok: Any) -> None:
    # Protocol: an EOS the policy samples ends its row (end "eos", reward 0); no corrective message or
    # observation is appended after it, so no EOS sits mid-context in training or evaluation.
    script = {"QA?": ["I am done" + tok.eos_token], "QB?": ["<search> b </search>", "<answer> x </answer>"]}
    backend, engine = ScriptedBackend(tok, script), FakeEngine()
    a, b = rollout([rec(0, "QA?"), rec(1, "QB?", "x")], backend, tok, engine, RolloutConfig(max_turns=3))
    assert a.end == "eos" and a.turns == 1 and a.reward == 0.0 and a.stop_reasons == ["eos"]
    assert a.response_ids[-1] == tok.eos_token_id and all(a.info_mask)  # the EOS is its last, trained token
    assert [c["rows"] for c in backend.calls] == [2, 1]  # the ended row is not generated again
    assert b.end == "answer" and b.reward == 1.0


def test_max_turns_forces_a_final_answer(tok: Any) -> None:
    script = {"QA?": ["<search> a1 </search>", "<search> a2 </search>", "<answer> Paris </answer>"],
              "QB?": ["<search> b1 </search>", "<search> b2 </search>", "<search> b3 </search>"]}
    backend, engine = ScriptedBackend(tok, script), FakeEngine()
    a, b = rollout([rec(0, "QA?"), rec(1, "QB?")], backend, tok, engine, RolloutConfig(max_turns=2))
    assert [c["rows"] for c in backend.calls] == [2, 2, 2] and len(engine.calls) == 2  # b3 is never run
    assert all(p.endswith(FORCE_ANSWER) for p in backend.calls[2]["prompts"])
    inserted = split_by_mask(a, tok)[1]
    assert inserted.endswith(FORCE_ANSWER) and inserted.count(FORCE_ANSWER) == 1  # forced text: mask 0
    assert a.finished and a.reward == 1.0 and a.turns == 3
    assert b.end == "no_answer" and b.queries == ["b1", "b2"] and b.invalid_actions == 1 and b.reward == 0.0


def test_observation_is_truncated_to_max_obs_tokens_and_counted(tok: Any) -> None:
    script = {"Q?": ["<search> long </search>", "<answer> x </answer>"]}
    engine = FakeEngine(doc_text="word " * 200)
    cfg = RolloutConfig(max_turns=2, max_obs_tokens=40, k=2)
    [t] = rollout([rec(0, "Q?")], ScriptedBackend(tok, script), tok, engine, cfg)
    block = [x for x, m in zip(t.response_ids, t.info_mask) if not m]
    assert len(block) == 40
    full = tok(info(format_documents(engine.docs(engine.calls[0][0]))), add_special_tokens=False).input_ids
    assert t.truncation["obs_blocks"] == 1 and t.truncation["obs_tokens"] >= len(full) - 40
    text = tok.decode(block)
    assert text.startswith("\n\n<information>Doc 1(Title: nq-0-0) word") and text.endswith("</information>\n\n")


def test_answer_is_read_from_the_policys_text_only(tok: Any) -> None:
    """The instruction's own example is "<answer> Beijing </answer>"; a document may quote tags too."""
    script = {"Capital of China?": ["<search> china </search>", "still thinking", "no answer"]}
    engine = FakeEngine(doc_text="<answer> Beijing </answer>")
    [t] = rollout([rec(0, "Capital of China?", "Beijing")], ScriptedBackend(tok, script), tok, engine,
                  RolloutConfig(max_turns=2))
    assert "<answer> Beijing </answer>" in tok.decode(t.prompt_ids)  # the premise: the prompt has one too
    assert "<answer> Beijing </answer>" in t.response
    assert t.answer is None and t.reward == 0.0 and t.metrics["em"] == 0.0 and t.end == "no_answer"


def test_length_limits_are_enforced_and_counted(tok: Any) -> None:
    q = "Q?"
    prompt, _ = encode_prompt(q, tok, RolloutConfig())
    # Room for the first turn and part of the information block only.
    cfg = RolloutConfig(max_turns=3, max_prompt_tokens=len(prompt), max_total_tokens=len(prompt) + 20)
    backend = ScriptedBackend(tok, {q: ["<search> a query </search>", "<answer> x </answer>"]})
    [t] = rollout([rec(0, q)], backend, tok, FakeEngine(), cfg)
    assert len(t.prompt_ids) + len(t.response_ids) == cfg.max_total_tokens
    assert t.end == "context" and t.truncation["budget_tokens"] > 0 and len(backend.calls) == 1
    # A turn longer than the room left is cut to it (the sampled prefix is kept), and counted.
    long_turn = " word" * 40
    backend = ScriptedBackend(tok, {q: [long_turn]})
    [t] = rollout([rec(0, q)], backend, tok, FakeEngine(), cfg)
    sampled = tok(long_turn, add_special_tokens=False).input_ids
    assert backend.calls[0]["max_new_tokens"] == 20 and t.response_ids == sampled[:20] and t.end == "context"
    assert t.truncation["budget_tokens"] == len(sampled) - 20 and t.generated_tokens == len(sampled)
    assert t.invalid_actions == 0 and t.turns == 1  # nothing is inserted once the budget is spent
    with pytest.raises(ValueError, match="exceeds max_prompt_tokens"):
        encode_prompt(q, tok, RolloutConfig(max_prompt_tokens=10))
    ids, dropped = encode_prompt(q, tok, RolloutConfig(max_prompt_tokens=10, prompt_overflow="truncate_left"))
    assert ids == prompt[-10:] and dropped == len(prompt) - 10


def test_n_samples_share_a_group_and_keep_the_row_id(tok: Any) -> None:
    script = {"QA?": ["<answer> a </answer>"], "QB?": ["<answer> b </answer>"]}
    trajs = rollout([rec(0, "QA?"), rec(1, "QB?")], ScriptedBackend(tok, script), tok, FakeEngine(),
                    RolloutConfig(n=3))
    assert [(t.row_id, t.group_id, t.sample) for t in trajs] == [
        ("nq-0", 0, 0), ("nq-0", 0, 1), ("nq-0", 0, 2), ("nq-1", 1, 0), ("nq-1", 1, 1), ("nq-1", 1, 2)]


def test_first_stop_finds_a_stop_string_split_across_tokens(tok: Any) -> None:
    ids = tok("<search> q </search> trailing text", add_special_tokens=False).input_ids
    n, s = first_stop(ids, tok, STOP_STRINGS)
    assert s == "</search>" and tok.decode(ids[:n]) == "<search> q </search>"
    assert first_stop(ids[: n - 1], tok, STOP_STRINGS) == (n - 1, None)


# --- real generation (tiny random model) -------------------------------------------------------------


class Recording:
    """Wraps a backend and keeps every output it returned."""

    def __init__(self, inner: Any):
        self.inner, self.outputs = inner, []

    def generate(self, *args: Any) -> list[GenOutput]:
        outs = self.inner.generate(*args)
        self.outputs.append(outs)
        return outs


def test_hf_rollout_keeps_the_sampled_ids_and_is_seeded(tiny: tuple[Any, Any]) -> None:
    model, tok = tiny
    records = [rec(0, "Capital of France?"), rec(1, "Who wrote the novel Moby Dick, and when?")]
    cfg = RolloutConfig(max_turns=2, max_new_tokens_per_turn=12, n=2)

    def run(seed: int) -> tuple[list[Any], Recording]:
        backend = Recording(HFBackend(model, tok, batch_size=3))
        return rollout(records, backend, tok, FakeEngine(), cfg, seed=seed), backend

    trajs, backend = run(3)
    assert len(backend.outputs) == 3  # random text: two invalid turns, then the forced turn
    for i, t in enumerate(trajs):
        sampled = [x for outs in backend.outputs for x in outs[i].token_ids]
        assert [x for x, m in zip(t.response_ids, t.info_mask) if m] == sampled  # not re-tokenised
        assert t.generated_tokens == len(sampled) == 36 and t.turns == 3
    assert [t.response_ids for t in run(3)[0]] == [t.response_ids for t in trajs]
    assert [t.response_ids for t in run(4)[0]] != [t.response_ids for t in trajs]
    assert trajs[0].response_ids != trajs[1].response_ids  # the n samples of a question differ


class ForcedTokens:
    """A forward hook that makes the model emit a fixed token sequence per row (indexed by the step since
    the prefill), so stop strings and eos can be exercised on a real `generate`."""

    def __init__(self, model: Any, rows: list[list[int]]):
        self.rows, self.step = rows, 0
        self.handle = model.register_forward_hook(self, with_kwargs=True)

    def __call__(self, module: Any, args: Any, kwargs: dict[str, Any], output: Any) -> Any:
        if kwargs["input_ids"].shape[1] > 1:
            self.step = 0  # a prefill: a new generate call
        logits = output.logits[:, -1, :]
        logits.fill_(-1e4)
        for b, row in enumerate(self.rows):
            logits[b, row[min(self.step, len(row) - 1)]] = 0.0
        self.step += 1
        return output


def test_hf_backend_stops_each_row_at_its_own_stop_string_or_eos(tiny: tuple[Any, Any]) -> None:
    model, tok = tiny
    enc = lambda s: tok(s, add_special_tokens=False).input_ids
    rows = [enc("<search> paris </search> and more text after it"),
            enc(" just text with no tag at all, going on and on and on and on"),
            enc("<answer> x") + [tok.eos_token_id] + enc(" after eos")]
    prompt = enc("Question: where?\n")
    backend = HFBackend(model, tok, batch_size=3)
    hook = ForcedTokens(model, rows)
    try:
        outs = backend.generate([prompt] * 3, 16, STOP_STRINGS, 1.0, 1.0, 0)
        hook.rows = rows[:1]
        alone = backend.generate([prompt], 16, STOP_STRINGS, 1.0, 1.0, 0)
    finally:
        hook.handle.remove()
    # Alone, the row's generation really stops at the tag: one forward per token, not 16.
    assert hook.step == len(alone[0].token_ids) == len(enc("<search> paris </search>")) < 16
    assert outs[0].stopped_by == "stop" and outs[0].text == "<search> paris </search>"
    assert outs[0].token_ids == enc("<search> paris </search>")
    assert outs[1].stopped_by == "length" and outs[1].token_ids == rows[1][:16]
    assert outs[2].stopped_by == "eos" and outs[2].token_ids == enc("<answer> x") + [tok.eos_token_id]


def test_compute_logprobs_matches_a_manual_log_softmax(tiny: tuple[Any, Any]) -> None:
    model, tok = tiny
    script = {"Short?": ["<search> q </search>", "<answer> a </answer>"],
              "A much longer question, to make the prompts differ in length?": ["<answer> b b b b b </answer>"]}
    records = [rec(0, "Short?"), rec(1, "A much longer question, to make the prompts differ in length?")]
    trajs = rollout(records, ScriptedBackend(tok, script), tok, FakeEngine(), RolloutConfig(max_turns=2))
    batch = collate(trajs, tok.pad_token_id)
    batch["old_logprobs"] = compute_logprobs(model, batch, temperature=0.7, micro_batch=2)
    R = batch["response_mask"].shape[1]
    assert batch["input_ids"].shape == (2, max(len(t.prompt_ids) for t in trajs) + R)
    assert batch["info_mask"].sum().item() == sum(sum(t.info_mask) for t in trajs)
    for b, t in enumerate(trajs):  # each row alone, unpadded
        ids = torch.tensor([t.prompt_ids + t.response_ids], device=model.device)
        with torch.no_grad():
            logits = model(input_ids=ids).logits[0].float().cpu() / 0.7
        want = torch.log_softmax(logits[len(t.prompt_ids) - 1: -1], -1).gather(
            -1, torch.tensor(t.response_ids)[:, None])[:, 0]
        r = len(t.response_ids)
        got = batch["old_logprobs"].cpu()  # (on the model's device)
        torch.testing.assert_close(got[b, :r], want, atol=logprob_atol(1e-4), rtol=1e-4)
        assert (got[b, r:] == 0).all()


# --- vLLM backend, on its interface ------------------------------------------------------------------


def test_vllm_backend_on_its_documented_interface(tok: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """vLLM cannot run here: a fake `vllm` module stands in for `SamplingParams` and `LLM.generate`."""
    ns = types.SimpleNamespace
    vllm = types.ModuleType("vllm")
    vllm.SamplingParams = lambda **kw: ns(**kw)
    monkeypatch.setitem(sys.modules, "vllm", vllm)
    enc = lambda s: tok(s, add_special_tokens=False).input_ids
    first = {"<search> q </search>": ("stop", "</search>"), "<answer> a </answer>": ("stop", "</answer>")}

    class FakeLLM:
        def __init__(self) -> None:
            self.calls: list[tuple[list[Any], list[Any]]] = []

        def generate(self, prompts: list[Any], params: list[Any], use_tqdm: bool = False) -> list[Any]:
            self.calls.append((prompts, params))
            text = list(first)[len(self.calls) - 1]
            ids = enc(text)
            logprobs = [{t: ns(logprob=-0.5)} for t in ids]
            finish, reason = first[text]
            return [ns(outputs=[ns(token_ids=ids, text=text, finish_reason=finish, stop_reason=reason,
                                   logprobs=logprobs)]) for _ in prompts]

    llm = FakeLLM()
    trajs = rollout([rec(0, "Q?")], VLLMBackend(llm, tok), tok, FakeEngine(), RolloutConfig(max_turns=2, n=2,
                    temperature=0.9, top_p=0.95, max_new_tokens_per_turn=50), seed=1)
    prompts, params = llm.calls[0]
    assert prompts[0] == {"prompt_token_ids": trajs[0].prompt_ids}
    p = params[0]
    assert (p.n, p.temperature, p.top_p, p.max_tokens, p.stop, p.include_stop_str_in_output, p.logprobs) == (
        1, 0.9, 0.95, 50, list(STOP_STRINGS), True, 0)
    assert len({q.seed for q in params}) == 2  # the two samples of one prompt must not share a seed
    t = trajs[0]
    assert t.finished and t.stop_reasons == ["stop", "stop"]
    batch = collate(trajs, tok.pad_token_id)
    lp = batch["sampler_logprobs"][0]
    assert torch.equal(lp[batch["info_mask"][0].bool()], torch.full((int(sum(t.info_mask)),), -0.5))
    assert (lp[~batch["info_mask"][0].bool()] == 0).all()
