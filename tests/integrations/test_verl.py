"""zerosearch in veRL, on the CPU, through veRL's own classes: the agent loop inside a real
`AgentLoopWorker` against a fake rollout server that returns scripted token ids, the step that drives the
curriculum, the reward hook, the exporter read back by `RLHFDataset`, and the drop-in search tool.

Needs veRL (`make test-verl` builds .venv-verl with `zerosearch[verl,dev]`); skipped otherwise.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import pytest

if os.environ.get("ZEROSEARCH_REQUIRE_VERL"):  # make test-verl: a missing veRL is a failure, not a skip
    import verl
else:
    verl = pytest.importorskip("verl", reason="veRL is not installed (pip install zerosearch[verl]; make test-verl)")
pytestmark = pytest.mark.verl

from omegaconf import OmegaConf  # noqa: E402
from verl.experimental.agent_loop.agent_loop import AgentLoopWorker  # noqa: E402
from verl.protocol import DataProto  # noqa: E402
from verl.utils.dataset.rl_dataset import RLHFDataset, collate_fn  # noqa: E402
from verl.workers.rollout.replica import TokenOutput  # noqa: E402

import zerosearch.integrations.verl.agent_loop as zal  # noqa: E402
from zerosearch.training.curriculum import Curriculum  # noqa: E402
from zerosearch.data.qa import QARecord  # noqa: E402
from zerosearch.engines.base import Document, SearchEngine, SearchRequest, format_documents  # noqa: E402
from zerosearch.agent.generation import GenOutput  # noqa: E402
from zerosearch.integrations.verl.data import verl_rows, write_verl_parquet  # noqa: E402
from zerosearch.integrations.verl.reward import compute_score  # noqa: E402
from zerosearch.prompts import FORCE_ANSWER, INFORMATION, INVALID_ACTION, SEARCH_AGENT  # noqa: E402
from zerosearch.reward import f1_reward  # noqa: E402
from zerosearch.agent.rollout import RolloutConfig, encode_prompt, information_ids, rollout  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/fakes.py
from fakes import FakeServer, search_r1_handler  # noqa: E402

PROMPT_LEN, RESPONSE_LEN = 512, 384
Q1, Q2 = "What is the capital of France?", "Who wrote The Broken Mirror?"
RECORDS = [QARecord("r1", Q1, ["Paris"], "nq"), QARecord("r2", Q2, ["Ada Brook", "A. Brook"], "hotpotqa")]
# Per question, what the policy "samples" at each turn: a search, an invalid action, an answer.
SCRIPT = {Q1: ["<think>look it up</think><search> capital of france </search>", "hmm, not sure",
               "<answer> Paris </answer>"],
          Q2: ["<search> broken mirror author </search>", "no tags here", "<answer> Ada Brook </answer>"]}


# --- fixtures ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A tiny-random Llama saved twice: with the SmolLM2 chat template (instruct) and without (base)."""
    from zerosearch.models import load

    root = tmp_path_factory.mktemp("models")
    out = {}
    for kind in ("instruct", "base"):
        model, tok = load("tiny-random", seed=0)
        if kind == "base":
            tok.chat_template = None
        model.save_pretrained(root / kind)
        tok.save_pretrained(root / kind)
        out[kind] = root / kind
    return out


def tokenizer(path: Path) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path)


def logprob(token: int) -> float:
    """The fake sampler's log-prob of a token: distinct per id, so a misaligned copy is caught."""
    return -((token % 13) + 1) / 10


class FakeRolloutServer:
    """veRL's `server_manager` with scripted outputs: the question is read from the decoded prompt, the
    turn from how many calls this request id (one trajectory) has made."""

    def __init__(self, tok: Any, script: dict[str, list[str]] = SCRIPT):
        self.tok, self.script = tok, script
        self.calls: list[dict[str, Any]] = []
        self.turns: dict[str, int] = defaultdict(int)

    async def generate(self, request_id: str, *, prompt_ids: list[int], sampling_params: dict[str, Any],
                       **kwargs: Any) -> TokenOutput:
        text = self.tok.decode(prompt_ids)
        q = next(q for q in self.script if q in text)
        turn = self.turns[request_id]
        self.turns[request_id] += 1
        self.calls.append({"question": q, "turn": turn, "params": dict(sampling_params), "prompt_ids": list(prompt_ids)})
        ids = self.tok(self.script[q][turn], add_special_tokens=False).input_ids[: sampling_params["max_tokens"]]
        lps = [logprob(t) for t in ids] if sampling_params.get("logprobs") else None  # as veRL's servers do
        return TokenOutput(token_ids=ids, log_probs=lps, stop_reason="completed")


class RecordingEngine(SearchEngine):
    name = "recording"

    def __init__(self) -> None:
        self.requests: list[SearchRequest] = []

    def search(self, requests: list[SearchRequest]) -> list[list[Document]]:
        self.requests += requests
        return [[Document(title=f"T{i} {r.query}", text=f"text {i} for {r.question}", source="recording")
                 for i in range(r.k)] for r in requests]


@pytest.fixture
def engine(monkeypatch: pytest.MonkeyPatch) -> RecordingEngine:
    e = RecordingEngine()
    monkeypatch.setattr(zal, "shared_engine", lambda *a, **k: e)
    return e


def agent_yaml(tmp_path: Path, **settings: Any) -> Path:
    entry = {"name": "zerosearch_agent", "_target_": "zerosearch.integrations.verl.agent_loop.ZeroSearchAgentLoop",
             "engine": {"name": "bm25"}, "rollout": {"max_turns": 4, "max_new_tokens_per_turn": 64, "k": 2,
                                                      "max_obs_tokens": 256},
             "curriculum": {"p_start": 0.0, "p_end": 0.5}, **settings}
    path = tmp_path / "agent_loops.yaml"
    path.write_text(json.dumps([entry]))  # YAML is a superset of JSON
    return path


def verl_config(model_dir: Path, agent_loops: Path, *, rollout: str = "vllm", total_steps: int = 4) -> Any:
    cfg = OmegaConf.load(Path(verl.__file__).parent / "trainer/config/_generated_ppo_trainer.yaml")
    cfg.actor_rollout_ref.model.path = str(model_dir)
    cfg.actor_rollout_ref.rollout.name = rollout
    cfg.actor_rollout_ref.rollout.agent.agent_loop_config_path = str(agent_loops)
    cfg.data.max_prompt_length, cfg.data.max_response_length = PROMPT_LEN, RESPONSE_LEN
    cfg.trainer.total_training_steps = total_steps
    return cfg


def exported_batch(tmp_path: Path, tok: Any, records: list[QARecord] = RECORDS) -> DataProto:
    """The rows as the trainer hands them to the rollout: exported parquet -> RLHFDataset -> collate."""
    path = tmp_path / "train.parquet"
    write_verl_parquet(path, verl_rows(records))
    ds = RLHFDataset(str(path), tok, OmegaConf.create({"max_prompt_length": PROMPT_LEN, "filter_overlong_prompts": False,
                                                      "cache_dir": str(tmp_path / "cache")}))
    return DataProto.from_single_dict(collate_fn([ds[i] for i in range(len(ds))]))


def run_worker(worker: AgentLoopWorker, batch: DataProto, **meta: Any) -> DataProto:
    batch.meta_info.update(meta)
    return asyncio.run(worker.generate_sequences(batch))


def row(out: DataProto, b: int) -> dict[str, Any]:
    """One output row without veRL's padding: prompt (left-padded), response (right-padded)."""
    attn = out.batch["attention_mask"][b]
    p = out.batch["prompts"][b][attn[:PROMPT_LEN].bool()].tolist()
    r_len = int(attn[PROMPT_LEN:].sum())
    return {"prompt": p, "response": out.batch["responses"][b][:r_len].tolist(),
            "mask": out.batch["response_mask"][b][:r_len].tolist(),
            "logprobs": out.batch["rollout_log_probs"][b][:r_len].tolist() if "rollout_log_probs" in out.batch else None,
            "pad_mask": out.batch["response_mask"][b][r_len:].tolist(), "turns": int(out.non_tensor_batch["__num_turns__"][b])}


def spans(ids: list[int], mask: list[int], tok: Any, value: int) -> list[str]:
    out, cur = [], []
    for t, m in zip(ids, mask):
        if m == value:
            cur.append(t)
        elif cur:
            out.append(tok.decode(cur))
            cur = []
    if cur:
        out.append(tok.decode(cur))
    return out


class ScriptedBackend:
    """The same script as a zerosearch GenerationBackend, for zerosearch's own rollout."""

    def __init__(self, tok: Any):
        self.tok, self.turn = tok, defaultdict(int)

    def generate(self, prompts, max_new_tokens, stop_strings, temperature, top_p, seed):
        outs = []
        for p in prompts:
            q = next(q for q in SCRIPT if q in self.tok.decode(p))
            ids = self.tok(SCRIPT[q][self.turn[q]], add_special_tokens=False).input_ids[:max_new_tokens]
            self.turn[q] += 1
            outs.append(GenOutput(ids, self.tok.decode(ids), "stop", [logprob(t) for t in ids]))
        return outs


# --- the agent loop ---------------------------------------------------------------------------------


def test_search_invalid_answer_trajectory_through_veRLs_worker(tmp_path: Path, model_dirs: dict[str, Path],
                                                               engine: RecordingEngine) -> None:
    tok = tokenizer(model_dirs["instruct"])
    server = FakeRolloutServer(tok)
    worker = AgentLoopWorker(verl_config(model_dirs["instruct"], agent_yaml(tmp_path)), server)
    batch = exported_batch(tmp_path, tok)
    batch.non_tensor_batch["global_steps"] = np.array([1, 1], dtype=object)  # as veRL's v1 trainer sends it
    out = run_worker(worker, batch)
    assert len(out) == 2
    # The same rows through zerosearch's own rollout: the veRL path must give the very same ids.
    cfg = RolloutConfig(max_turns=4, max_new_tokens_per_turn=64, k=2, max_obs_tokens=256, n=1,
                        max_prompt_tokens=PROMPT_LEN, max_total_tokens=PROMPT_LEN + RESPONSE_LEN)
    ref = rollout(RECORDS, ScriptedBackend(tok), tok, RecordingEngine(), cfg, noise_prob=0.0)
    for b, (rec, t) in enumerate(zip(RECORDS, ref)):
        r = row(out, b)
        assert r["prompt"] == t.prompt_ids == encode_prompt(rec.question, tok, cfg)[0]
        assert tok.decode(r["prompt"]).endswith(tok.apply_chat_template(
            [{"role": "user", "content": SEARCH_AGENT.format(question=rec.question)}], tokenize=False,
            add_generation_prompt=True)[-40:])  # the instruct model's chat template
        assert r["response"] == t.response_ids and r["mask"] == t.info_mask
        # mask 1 exactly on the three generations, 0 on the information block and the corrective message
        assert spans(r["response"], r["mask"], tok, 1) == [tok.decode(tok(s, add_special_tokens=False).input_ids)
                                                          for s in SCRIPT[rec.question]]
        # veRL runs the rows concurrently, so the engine sees them in either order: pick this row's request
        req = next(q for q in engine.requests if q.question == rec.question)
        docs = format_documents(RecordingEngine().search([req])[0])
        assert spans(r["response"], r["mask"], tok, 0) == [tok.decode(information_ids(docs, tok, 256)[0]),
                                                          tok.decode(tok(INVALID_ACTION, add_special_tokens=False).input_ids)]
        assert r["logprobs"] == pytest.approx([logprob(x) if m else 0.0 for x, m in zip(r["response"], r["mask"])])
        assert set(r["pad_mask"]) <= {0}
        assert r["turns"] == 6  # prompt, search, information, invalid, corrective message, answer
    # stop strings on the server, in vLLM's names, with the stop string kept in the output
    assert {tuple(c["params"]["stop"]) for c in server.calls} == {("</search>", "</answer>")}
    assert all(c["params"]["include_stop_str_in_output"] is True and c["params"]["logprobs"] for c in server.calls)
    assert len(server.calls) == 6
    # one engine call per search, with the row's own question, gold answers and id
    assert sorted((r.question, r.golden_answers, r.row_id, r.k) for r in engine.requests) == sorted([
        (Q1, ["Paris"], "r1", 2), (Q2, ["Ada Brook", "A. Brook"], "r2", 2)])


def test_base_model_raw_prompt_forced_answer_and_sglang_stop_names(tmp_path: Path, model_dirs: dict[str, Path],
                                                                   engine: RecordingEngine) -> None:
    tok = tokenizer(model_dirs["base"])
    assert tok.chat_template is None
    script = {Q1: ["<search> capital of france </search>", "<answer> Paris </answer>"]}
    server = FakeRolloutServer(tok, script)
    cfg = verl_config(model_dirs["base"], agent_yaml(tmp_path, rollout={"max_turns": 1, "k": 1}), rollout="sglang")
    cfg.actor_rollout_ref.rollout.calculate_log_probs = False  # no sampler log-probs: none in the batch either
    worker = AgentLoopWorker(cfg, server)
    batch = exported_batch(tmp_path, tok, RECORDS[:1])
    batch.non_tensor_batch["global_steps"] = np.array([1], dtype=object)
    out = run_worker(worker, batch)
    assert "rollout_log_probs" not in out.batch
    r = row(out, 0)
    assert r["prompt"] == tok(SEARCH_AGENT.format(question=Q1)).input_ids  # raw text, the tokenizer's own BOS
    inserted = spans(r["response"], r["mask"], tok, 0)
    assert len(inserted) == 1 and inserted[0].endswith(tok.decode(tok(FORCE_ANSWER, add_special_tokens=False).input_ids))
    assert inserted[0].startswith(tok.decode(tok(INFORMATION.split("{documents}")[0], add_special_tokens=False).input_ids))
    assert r["turns"] == 5  # prompt, search, information, forced-answer text, answer
    assert all(c["params"]["no_stop_trim"] is True and "include_stop_str_in_output" not in c["params"]
               for c in server.calls)


def test_response_never_exceeds_verls_response_length(tmp_path: Path, model_dirs: dict[str, Path],
                                                     engine: RecordingEngine) -> None:
    tok = tokenizer(model_dirs["instruct"])
    long = "<search> " + "word " * 400 + "</search>"
    server = FakeRolloutServer(tok, {Q1: [long] * 6})
    worker = AgentLoopWorker(verl_config(model_dirs["instruct"], agent_yaml(
        tmp_path, rollout={"max_turns": 4, "max_new_tokens_per_turn": 300, "k": 2})), server)
    batch = exported_batch(tmp_path, tok, RECORDS[:1])
    batch.non_tensor_batch["global_steps"] = np.array([1], dtype=object)
    out = run_worker(worker, batch)
    r = row(out, 0)
    assert len(r["response"]) == RESPONSE_LEN  # cut at the budget, never beyond veRL's padding width
    assert out.non_tensor_batch["zerosearch/end/context"][0] == 1.0
    assert all(c["params"]["max_tokens"] <= 300 for c in server.calls)


# --- the curriculum step ----------------------------------------------------------------------------


def noise_probs(engine: RecordingEngine) -> list[float]:
    ps = [r.noise_prob for r in engine.requests]
    engine.requests.clear()
    return ps


def test_p_follows_the_training_step_v1_column_and_legacy_meta_info(tmp_path: Path, model_dirs: dict[str, Path],
                                                                   engine: RecordingEngine) -> None:
    tok = tokenizer(model_dirs["instruct"])
    total = 4
    p = Curriculum(0.0, 0.5, total, 4.0)
    cfg = verl_config(model_dirs["instruct"], agent_yaml(tmp_path), total_steps=total)
    # veRL's v1 trainer (the 0.9.1 default): `global_steps` is a batch column, a per-sample kwarg of run().
    plain = AgentLoopWorker(cfg, FakeRolloutServer(tok))
    seen = []
    for step in (1, 2, 3, 4):
        batch = exported_batch(tmp_path, tok)
        batch.non_tensor_batch["global_steps"] = np.array([step] * len(batch), dtype=object)
        out = run_worker(plain, batch)
        seen.append(noise_probs(engine))
        assert list(out.non_tensor_batch["zerosearch/noise_prob"]) == pytest.approx([p(step)] * 2)
        assert list(out.non_tensor_batch["zerosearch/step"]) == [step, step]
    assert seen == [pytest.approx([p(s)] * 2) for s in (1, 2, 3, 4)]
    assert seen[0][0] < seen[1][0] < seen[2][0] < seen[3][0] == pytest.approx(0.5)
    batch = exported_batch(tmp_path, tok)  # the validation veRL runs before training: step 0, p_start
    batch.non_tensor_batch["global_steps"] = np.array([0, 0], dtype=object)
    run_worker(plain, batch, validate=True)
    assert noise_probs(engine) == [0.0, 0.0]
    # The legacy trainer: the step only in meta_info. veRL's own worker does not pass it on ...
    with pytest.raises(RuntimeError, match="no training step reached the agent loop"):
        run_worker(AgentLoopWorker(cfg, FakeRolloutServer(tok)), exported_batch(tmp_path, tok), global_steps=2)
    # ... zerosearch's worker (what ZeroSearchAgentLoopManager deploys) does.
    legacy = zal.ZeroSearchAgentLoopWorker(cfg, FakeRolloutServer(tok))
    for step in (1, 3):
        run_worker(legacy, exported_batch(tmp_path, tok), global_steps=step)
        assert noise_probs(engine) == pytest.approx([p(step)] * 2)


def test_manager_deploys_the_step_forwarding_worker() -> None:
    m = zal.ZeroSearchAgentLoopManager.__new__(zal.ZeroSearchAgentLoopManager)
    zal.ZeroSearchAgentLoopManager.__init__(m, OmegaConf.create({"actor_rollout_ref": {"rollout": {}, "model": {}}}), None)
    assert m.agent_loop_workers_class.__ray_metadata__.class_name == "ZeroSearchAgentLoopWorker"


def test_fixed_noise_needs_no_step_and_total_steps_is_required(tmp_path: Path, model_dirs: dict[str, Path],
                                                               engine: RecordingEngine) -> None:
    tok = tokenizer(model_dirs["instruct"])
    cfg = verl_config(model_dirs["instruct"], agent_yaml(tmp_path, curriculum={"fixed": 0.5}))
    run_worker(AgentLoopWorker(cfg, FakeRolloutServer(tok)), exported_batch(tmp_path, tok))
    assert noise_probs(engine) == [0.5, 0.5]
    cfg = verl_config(model_dirs["instruct"], agent_yaml(tmp_path))
    cfg.trainer.total_training_steps = None
    with pytest.raises(Exception, match="needs curriculum.total_steps"):  # hydra wraps the ValueError
        run_worker(AgentLoopWorker(cfg, FakeRolloutServer(tok)), exported_batch(tmp_path, tok), global_steps=1)
    cfg = verl_config(model_dirs["instruct"], agent_yaml(tmp_path, rolout={"max_turns": 2}))
    with pytest.raises(Exception, match="unknown setting.s. rolout"):
        run_worker(AgentLoopWorker(cfg, FakeRolloutServer(tok)), exported_batch(tmp_path, tok), global_steps=1)
    cfg = verl_config(model_dirs["instruct"], agent_yaml(tmp_path, rollout={"max_turns": 0}))
    with pytest.raises(Exception, match="max_turns"):
        run_worker(AgentLoopWorker(cfg, FakeRolloutServer(tok)), exported_batch(tmp_path, tok), global_steps=1)


# --- reward -----------------------------------------------------------------------------------------


class RewardHandle:
    """A stand-in for veRL's reward-loop Ray actor: `compute_score.remote(data)` runs veRL's naive reward
    manager with the function veRL's hook loads from `reward.custom_reward_function`."""

    def __init__(self, cfg: Any, tok: Any):
        from verl.experimental.reward_loop.reward_manager.naive import NaiveRewardManager
        from verl.trainer.ppo.reward import get_custom_reward_fn

        hook = OmegaConf.create({"reward": {"custom_reward_function": {
            "path": "pkg://zerosearch.integrations.verl.reward", "name": "compute_score"}}})
        fn = get_custom_reward_fn(hook)
        handle = self

        class _Remote:
            async def remote(self, data: DataProto) -> dict[str, Any]:
                handle.seen.append(data)  # the manager binds the running loop, as in its actor
                return await NaiveRewardManager(cfg, tok, fn).run_single(data)

        self.compute_score, self.seen = _Remote(), []


def test_compute_score_through_veRLs_reward_hook(tmp_path: Path, model_dirs: dict[str, Path],
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """The worker's streaming reward path: veRL decodes the whole response (documents included) and hands
    the loop's extra fields to the function in extra_info; the score is the policy's own answer's F1."""

    class Leaky(RecordingEngine):  # a retrieved document that carries <answer> tags
        def search(self, requests):
            return [[Document("t", "<answer> Paris </answer>", "x")] for _ in requests]

    monkeypatch.setattr(zal, "shared_engine", lambda *a, **k: Leaky())
    tok = tokenizer(model_dirs["instruct"])
    # Q1 never answers: the only <answer> in its decoded response is the document's.
    script = {Q1: ["<search> q </search>", "no idea", "still none", "hmm", "I give up"],
              Q2: ["<search> q </search>", "<answer> the Ada Brook </answer>"]}
    cfg = verl_config(model_dirs["instruct"], agent_yaml(tmp_path))
    batch = exported_batch(tmp_path, tok)
    batch.non_tensor_batch["global_steps"] = np.array([1, 1], dtype=object)
    handle = RewardHandle(cfg, tok)
    out = run_worker(AgentLoopWorker(cfg, FakeRolloutServer(tok, script), reward_loop_worker_handles=[handle]), batch)
    assert "<answer> Paris </answer>" in tok.decode(handle.seen[0].batch["responses"][0], skip_special_tokens=True)
    scores = out.batch["rm_scores"].sum(-1).tolist()
    assert scores == [0.0, 1.0]  # the document's answer is not the policy's
    assert list(out.non_tensor_batch["em"]) == [0.0, 1.0] and list(out.non_tensor_batch["answered"]) == [0.0, 1.0]
    assert set(out.meta_info["reward_extra_keys"]) == {"score", "f1", "em", "cover_em", "answered", "valid_format"}
    assert list(out.non_tensor_batch["cover_em"]) == [0.0, 1.0]


def test_compute_score_values() -> None:
    s = compute_score("nq", "<answer> the Eiffel Tower </answer>", {"target": np.array(["Eiffel Tower", "x"])})
    assert s == {"score": 1.0, "em": 1.0, "cover_em": 1.0, "f1": 1.0, "answered": 1.0, "valid_format": 1.0}
    s = compute_score("nq", "<answer> Gustave Eiffel tower </answer>", ["Eiffel Tower"])
    assert s["score"] == pytest.approx(f1_reward("<answer> Gustave Eiffel tower </answer>", ["Eiffel Tower"]))
    assert s["score"] == pytest.approx(2 * (2 / 3) * 1 / (2 / 3 + 1)) and s["em"] == 0.0 and s["cover_em"] == 1.0
    assert compute_score("nq", "I do not know", "Paris") == {"score": 0.0, "em": 0.0, "cover_em": 0.0, "f1": 0.0,
                                                             "answered": 0.0, "valid_format": 0.0}
    # without the agent loop's policy text (tool agent): inserted blocks are removed before extraction
    text = "<search> q </search><tool_response><answer> Paris </answer></tool_response> no answer"
    assert compute_score("nq", text, ["Paris"])["score"] == 0.0
    assert compute_score("nq", text + " <answer>Paris</answer>", ["Paris"])["score"] == 1.0
    with pytest.raises(ValueError, match="no gold answers"):
        compute_score("nq", "<answer> a </answer>", {"target": []})


# --- data -------------------------------------------------------------------------------------------


def test_export_cli_reads_back_in_veRLs_dataset(tmp_path: Path, model_dirs: dict[str, Path]) -> None:
    from zerosearch.cli import main
    from zerosearch.data.qa import write_qa

    src = tmp_path / "qa.jsonl"
    write_qa(src, RECORDS)
    out = tmp_path / "verl" / "train.parquet"
    assert main(["export", "--format", "verl", "--data", str(src), "--out", str(out)]) == 0
    tok = tokenizer(model_dirs["instruct"])
    ds = RLHFDataset(str(out), tok, OmegaConf.create({"max_prompt_length": PROMPT_LEN, "cache_dir": str(tmp_path)}))
    assert len(ds) == 2  # the instruct tokenizer's length filter kept both
    item = ds[1]
    assert item["data_source"] == "hotpotqa" and item["agent_name"] == "zerosearch_agent" and item["index"] == 1
    assert list(item["reward_model"]["ground_truth"]["target"]) == ["Ada Brook", "A. Brook"]
    ex = item["extra_info"]
    assert (ex["id"], ex["question"], list(ex["golden_answers"]), ex["agent_name"]) == (
        "r2", Q2, ["Ada Brook", "A. Brook"], "zerosearch_agent")
    assert item["raw_prompt"] == [{"role": "user", "content": SEARCH_AGENT.format(question=Q2)}]
    assert item["tools_kwargs"]["search"]["create_kwargs"]["question"] == Q2
    assert main(["export", "--format", "verl", "--data", str(src), "--out", str(tmp_path / "x.jsonl")]) == 2
    assert not (tmp_path / "x.jsonl").exists()


def test_export_refuses_duplicate_ids() -> None:
    with pytest.raises(ValueError, match="share the id 'r1'"):
        verl_rows([RECORDS[0], RECORDS[0]])


# --- the drop-in tool -------------------------------------------------------------------------------


def tool_yaml(tmp_path: Path, config: dict[str, Any]) -> Path:
    path = tmp_path / "tools.yaml"
    path.write_text(json.dumps({"tools": [{"class_name": "zerosearch.integrations.verl.tool.ZeroSearchSearchTool",
                                           "config": {"type": "native", **config}}]}))
    return path


def call_tool(tool: Any, create_kwargs: dict[str, Any], queries: Any) -> tuple[str, dict[str, Any]]:
    """As veRL 0.9's ToolAgentLoop._call_tool does: create(create_kwargs=...), execute, release."""

    async def go():
        iid, _ = await tool.create(create_kwargs=create_kwargs)
        resp, reward, metrics = await tool.execute(iid, {"query_list": queries}, agent_data=None)
        await tool.release(iid)
        return resp.text, metrics

    return asyncio.run(go())


def test_tool_keeps_the_old_config_and_schema_against_a_retrieval_server(tmp_path: Path) -> None:
    from verl.tools.tool_registry import initialize_tools_from_config

    with FakeServer(search_r1_handler) as s:
        (tool,) = initialize_tools_from_config(str(tool_yaml(tmp_path, {
            "retrieval_service_url": f"{s.url}/retrieve", "topk": 2, "timeout": 5, "num_workers": 4, "rate_limit": 4})))
        assert tool.name == "search"
        assert tool.tool_schema.function.parameters.required == ["query_list"]
        text, metrics = call_tool(tool, {"question": Q1, "ground_truth": {"target": ["Paris"]}}, ["alpha", "beta"])
        assert s.requests[0]["body"] == {"queries": ["alpha", "beta"], "topk": 2, "return_scores": True}
    result = json.loads(text)["result"]
    groups = result.split("\n---\n")
    assert len(groups) == 2 and groups[0].startswith("Doc 1 (Title: Title 0)\nabout alpha")
    assert "Doc 2 (Title: Title 1)\nabout beta" in groups[1]
    assert metrics["status"] == "success" and metrics["total_results"] == 4 and metrics["query_count"] == 2
    bad, _ = call_tool(tool, {}, "not a list")
    assert "query_list" in json.loads(bad)["result"]


def test_tool_on_the_simulator_gets_each_rows_question_and_answer(tmp_path: Path) -> None:
    from zerosearch.integrations.verl.tool import ZeroSearchSearchTool

    prompts = []

    def sim(method, path, query, body):
        prompts.append(body["messages"][0]["content"])
        text = "\n".join(f"Doc {i}: a long document number {i} " + "filler " * 60 for i in range(1, 6))
        return 200, {"choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": text}}]}

    with FakeServer(sim) as s:
        tool = ZeroSearchSearchTool({"topk": 5, "noise_prob": 0.0, "max_response_chars": 1000, "engine": {
            "name": "simulated", "endpoint": [f"{s.url}/v1"], "model": "sim", "leak_guard": "off", "retries": 0}})
        text, metrics = call_tool(tool, {"id": "r2", "question": Q2, "ground_truth": {"target": ["Ada Brook"]}},
                                  ["broken mirror author"])
    assert len(prompts) == 1 and Q2 in prompts[0] and "Ada Brook" in prompts[0]
    assert len(text) <= 1000  # what veRL's max_tool_response_length counts: the characters of the response
    result = json.loads(text)["result"]
    assert [f"Doc {i} (Title:" in result for i in range(1, 6)] == [True] * 5  # every document kept, each cut
    assert metrics["noisy_draws"] == 0 and metrics["total_results"] == 5


# --- the recipes (composed against veRL's own config; no training here) -----------------------------

RECIPES = Path(__file__).resolve().parents[2] / "recipes" / "verl"


def recipe_overrides(name: str, tmp_path: Path, **env: str) -> list[str]:
    """The hydra overrides a recipe script hands `python -m verl.trainer.main_ppo` (PYTHON replaced by a
    script that prints its argv)."""
    import subprocess

    printer = tmp_path / "print_args"
    printer.write_text('#!/bin/sh\nfor a in "$@"; do printf "%s\\0" "$a"; done\n')
    printer.chmod(0o755)
    out = subprocess.run(["bash", str(RECIPES / f"{name}_qwen2.5-3b.sh")], env={**os.environ, "PYTHON": str(printer), **env},
                         capture_output=True, check=True, timeout=60).stdout.decode()
    args = out.split("\0")[:-1]
    assert args[:2] == ["-m", "verl.trainer.main_ppo"]
    return args[2:]


def compose(overrides: list[str]) -> Any:
    """What `@hydra.main(config_path="config", config_name="ppo_trainer")` of veRL's main_ppo builds."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    with initialize_config_dir(config_dir=str(Path(verl.__file__).parent / "trainer" / "config"), version_base=None):
        return hydra_compose("ppo_trainer", overrides=overrides)


def test_recipes_compose_with_the_papers_settings(tmp_path: Path) -> None:
    cfgs = {n: compose(recipe_overrides(n, tmp_path, MODEL="Qwen/Qwen2.5-3B", ROLLOUT="sglang"))
            for n in ("grpo", "ppo", "reinforce_pp")}
    for c in cfgs.values():
        a, r = c.actor_rollout_ref.actor, c.actor_rollout_ref.rollout
        assert (c.data.train_batch_size, r.n, c.trainer.total_training_steps) == (64, 5, 203)
        assert (a.optim.lr, a.clip_ratio, a.entropy_coeff, r.temperature, r.top_p) == (1e-6, 0.2, 0.001, 1.0, 0.95)
        assert r.name == "sglang" and r.agent.default_agent_loop == "zerosearch_agent"
        assert Path(r.agent.agent_loop_config_path) == RECIPES / "agent_loops.yaml"
        assert c.reward.custom_reward_function.path == "pkg://zerosearch.integrations.verl.reward"
        assert c.data.filter_overlong_prompts is False  # a base model: no chat template to measure with
    g, p, rpp = cfgs["grpo"], cfgs["ppo"], cfgs["reinforce_pp"]
    assert g.algorithm.adv_estimator == "grpo" and g.actor_rollout_ref.actor.use_kl_loss
    assert (g.actor_rollout_ref.actor.kl_loss_coef, g.actor_rollout_ref.actor.kl_loss_type) == (0.001, "low_var_kl")
    assert g.actor_rollout_ref.actor.optim.lr_warmup_steps_ratio == 0.95 and not g.algorithm.use_kl_in_reward
    assert (p.algorithm.adv_estimator, p.algorithm.gamma, p.algorithm.lam) == ("gae", 1.0, 1.0)
    assert p.algorithm.use_kl_in_reward and p.algorithm.kl_ctrl.kl_coef == 0.001 and p.algorithm.kl_penalty == "kl"
    assert (p.critic.optim.lr, p.critic.cliprange_value, p.critic.model.path) == (1e-5, 0.5, "Qwen/Qwen2.5-3B")
    assert p.actor_rollout_ref.actor.optim.lr_warmup_steps_ratio == 0.285
    assert rpp.algorithm.adv_estimator == "reinforce_plus_plus" and rpp.algorithm.use_kl_in_reward
    assert not rpp.actor_rollout_ref.actor.use_kl_loss
    instruct = compose(recipe_overrides("grpo", tmp_path, MODEL="Qwen/Qwen2.5-3B-Instruct"))
    assert instruct.data.filter_overlong_prompts is True and instruct.actor_rollout_ref.rollout.name == "vllm"
    with pytest.raises(Exception):  # the check above can fail: veRL's config refuses an unknown key
        compose(recipe_overrides("grpo", tmp_path) + ["actor_rollout_ref.actor.no_such_key=1"])


def test_recipe_agent_loop_and_tool_configs_load(monkeypatch: pytest.MonkeyPatch) -> None:
    from verl.tools.tool_registry import initialize_tools_from_config

    monkeypatch.setenv("SIM_ENDPOINT", "http://127.0.0.1:9/v1")
    (entry,) = OmegaConf.to_container(OmegaConf.load(RECIPES / "agent_loops.yaml"), resolve=True)
    assert entry["name"] == "zerosearch_agent" and entry["_target_"] == f"{zal.__name__}.ZeroSearchAgentLoop"
    s = zal.AgentSettings.model_validate({k: v for k, v in entry.items() if k not in ("name", "_target_")})
    assert s.engine["endpoint"] == ["http://127.0.0.1:9/v1"] and (s.rollout.max_turns, s.rollout.k) == (5, 5)
    assert (s.curriculum.p_start, s.curriculum.p_end, s.curriculum.base, s.curriculum.total_steps) == (0.0, 0.5, 4.0, None)
    sched = zal.build_schedule(s.curriculum, 203)
    assert sched(0) == 0.0 and sched(203) == pytest.approx(0.5)
    (tool,) = initialize_tools_from_config(str(RECIPES / "search_tool.yaml"))
    assert (tool.name, tool.topk, tool.max_response_chars) == ("search", 5, 2048)
    assert tool.engine_settings["name"] == "http" and tool.engine_settings["endpoint"] == ["http://127.0.0.1:8000"]


def test_turn_count_of_rows_that_end_on_eos() -> None:
    # An EOS ends the row (zerosearch.agent.rollout: end="eos", counted invalid) with no corrective message after it.
    from zerosearch.integrations.verl.agent_loop import count_turns
    from zerosearch.agent.rollout import Trajectory

    def traj(**kw: Any) -> Trajectory:
        return Trajectory(row_id="r", group_id=0, sample=0, data_source="d", question="q", golden_answers=["a"],
                          prompt_ids=[1], **kw)

    # search, invalid (corrected), then EOS: prompt + 3 generations + 1 information + 1 corrective message
    assert count_turns(traj(turns=3, searches=1, invalid_actions=2, end="eos"), max_turns=4) == 6
    # an EOS on the forced-answer turn: prompt + 2 generations + the forced text, no corrective message
    assert count_turns(traj(turns=2, invalid_actions=1, end="eos"), max_turns=1) == 4
    # the unchanged cases: an unanswered forced turn, and a corrected invalid action before an answer
    assert count_turns(traj(turns=2, invalid_actions=1, end="no_answer"), max_turns=1) == 4
    assert count_turns(traj(turns=2, invalid_actions=1, valid_actions=1, end="answer"), max_turns=4) == 4
