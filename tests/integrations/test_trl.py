"""zerosearch inside trl.GRPOTrainer, end to end on the CPU (`make test-trl`; skipped without TRL).

One tiny run (tiny-random policy, the synthetic world, the real simulated engine, 2 rollouts) is shared
by the first tests; then the same run under `accelerate launch --num_processes 2` (DDP over gloo); then
zerosearch's GRPO loss against TRL's on one fixed batch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.trl
trl = pytest.importorskip("trl", reason="TRL is not installed (pip install 'zerosearch[trl]'; make test-trl)")
torch = pytest.importorskip("torch")

from trl_doubles import ROOT, build, sampled_mask, tiny_config  # noqa: E402

from zerosearch.training.curriculum import Curriculum  # noqa: E402
from zerosearch.engines.base import format_documents  # noqa: E402
from zerosearch.prompts import FORCE_ANSWER, INFORMATION, INVALID_ACTION  # noqa: E402
from zerosearch.reward import f1_reward  # noqa: E402


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    torch.set_num_threads(1)
    cfg = tiny_config()
    out = tmp_path_factory.mktemp("trl-run")
    trainer, engine = build(cfg, out)
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    trainer.train()
    after = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    engine.close()
    return {"cfg": cfg, "trainer": trainer, "engine": engine, "rollout": trainer.zerosearch_rollout,
            "before": before, "after": after, "out": out}


def test_env_mask_is_zero_exactly_on_inserted_spans(run: dict[str, Any]) -> None:
    ro, tok = run["rollout"], run["trainer"].processing_class
    searched = 0
    for out, trajs, backend in zip(ro.outputs, ro.trajectories, ro.backends):
        assert len(out["completion_ids"]) == len(trajs) == 4  # one completion per prompt, TRL's order
        for ids, mask, prompt_ids, t in zip(out["completion_ids"], out["env_mask"], out["prompt_ids"], trajs):
            assert len(mask) == len(ids) and mask == t.info_mask
            # 1 on every token a backend returned for this row, 0 elsewhere: rebuilt from the backend's record
            assert mask == sampled_mask(prompt_ids, ids, backend.calls)
            # the 0-spans decode to exactly what the rollout inserted (one search turn, then the forced answer)
            inserted = tok.decode([i for i, m in zip(ids, mask) if m == 0])
            if t.end == "answer" and t.turns == 1:
                want = ""
            else:
                first = INFORMATION.format(documents=format_documents(t.documents[0])) if t.searches else INVALID_ACTION
                want = first + FORCE_ANSWER
            assert inserted == want
            assert sum(t.truncation.values()) == 0  # nothing cut: the check above covers every token
            searched += t.searches
    assert searched >= 2  # the inserted spans were exercised (the scripted half searches)


def test_reward_column_is_zerosearch_f1_of_the_policy_text(run: dict[str, Any]) -> None:
    trainer, ro = run["trainer"], run["rollout"]
    # TRL's reward column for the last generation batch (its deque keeps one batch), and every step's mean
    logged = list(trainer._logs["rewards"]["zerosearch_f1"])
    assert logged == pytest.approx([t.reward for t in ro.trajectories[-1]], abs=1e-7)
    means = [row["rewards/zerosearch_f1/mean"] for row in trainer.state.log_history if "loss" in row]
    assert means == pytest.approx([sum(t.reward for t in trajs) / len(trajs) for trajs in ro.trajectories])
    scripted = [t for trajs in ro.trajectories for t in trajs if t.searches]
    assert scripted and all(t.reward == f1_reward(f"<answer> {t.golden_answers[0]} </answer>", t.golden_answers)
                            == 1.0 for t in scripted)
    assert any(t.reward < 1.0 for trajs in ro.trajectories for t in trajs)  # groups have variance


def test_noise_prob_reaching_the_engine_follows_the_curriculum(run: dict[str, Any]) -> None:
    cfg, ro = run["cfg"], run["rollout"]
    c = cfg.curriculum
    curve = Curriculum(c.p_start, c.p_end, cfg.train.steps, c.base)
    # the global_step TRL's rollout sees: optimizer steps done (1 per rollout here), max_steps = 2
    assert ro.steps_seen == [(0, 2), (1, 2)]
    for i, calls in enumerate(ro.engine_calls, start=1):
        sent = {r.noise_prob for call in calls for r in call}
        assert sent == {curve.p(i)}, f"rollout {i}: {sent}"
    assert [h["noise_prob"] for h in ro.history] == pytest.approx([curve.p(1), curve.p(2)])
    assert curve.p(1) < curve.p(2) == c.p_end
    # every query carried its own row's question and gold answers
    golds = {r.question: r.golden_answers for r in ro.by_prompt.values()}
    for calls in ro.engine_calls:
        for r in (r for call in calls for r in call):
            assert r.golden_answers == golds[r.question] and r.query == r.question


def test_parameters_move_because_of_the_gradient(run: dict[str, Any]) -> None:
    trainer, before, after = run["trainer"], run["before"], run["after"]
    assert trainer.args.weight_decay == 0.0 and trainer.args.beta == 0.0 and trainer.args.entropy_coef == 0.0
    norms = [row["grad_norm"] for row in trainer.state.log_history if "grad_norm" in row]
    assert len(norms) == 2 and all(n > 0 for n in norms)
    moved = [n for n in before if not torch.equal(before[n], after[n])]
    # AdamW with weight decay 0 leaves a parameter unchanged iff all its gradients were 0
    assert len(moved) >= len(before) // 2, f"only {moved} moved"


def test_rollout_stats_reach_the_logs(run: dict[str, Any]) -> None:
    trainer, out = run["trainer"], run["out"]
    rows = [row for row in trainer.state.log_history if "loss" in row]
    assert len(rows) == 2
    for row in rows:
        for key in ("turns", "searches", "noise_prob", "useful_draws", "noisy_draws", "engine_fallbacks",
                    "truncated_tokens", "engine/leak_flagged", "engine/queries", "em", "cover_em", "valid_format"):
            assert f"zerosearch/{key}" in row, key
    assert rows[0]["zerosearch/noise_prob"] < rows[1]["zerosearch/noise_prob"]
    engine_queries = sum(len(r) for calls in run["rollout"].engine_calls for r in calls)
    assert rows[-1]["zerosearch/engine/queries"] == engine_queries  # cumulative counter of the real engine
    searches = [sum(t.searches for t in trajs) for trajs in run["rollout"].trajectories]
    assert [row["zerosearch/useful_draws"] + row["zerosearch/noisy_draws"] for row in rows] == searches
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines if "loss" in x] == [1, 2]


def _subprocess_env() -> dict[str, str]:
    """A child process's environment: one torch thread, this checkout's zerosearch first on the path."""
    return {**os.environ, "OMP_NUM_THREADS": "1",
            "PYTHONPATH": f"{ROOT / 'src'}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}


@pytest.mark.timeout(1200)
def test_two_processes_ddp_over_gloo(tmp_path: Path) -> None:
    """The same run under `accelerate launch --num_processes 2`: the simulated engine in every process,
    groups split across ranks, DDP keeps the replicas identical. On a machine without GPUs accelerate's
    `--multi_gpu` launcher (torchrun) gives MULTI_CPU over gloo; its `--cpu` flag would start ONE process."""
    env = _subprocess_env()
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
           "--mixed_precision", "no", "--dynamo_backend", "no", str(Path(__file__).with_name("trl_ddp_run.py")),
           str(tmp_path)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1100)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["rank"] for r in ranks] == [0, 1] and all(r["world_size"] == 2 for r in ranks)
    assert all(r["engine_queries"] > 0 for r in ranks)  # each process queried its own simulated engine
    assert ranks[0]["prompts"] != ranks[1]["prompts"]  # each rank rolled out its own rows
    # each rank rolls out half of every rollout's 2 questions x 2 samples: one whole group each
    assert all(len(p) == 2 and p[0] == p[1] for r in ranks for p in r["prompts"])
    assert ranks[0]["noise_probs"] == ranks[1]["noise_probs"]  # the same curriculum step on both ranks
    assert ranks[0]["logged_trajectories"] == [4.0, 4.0]  # the logged counts cover both ranks
    assert ranks[0]["param_sum"] == ranks[1]["param_sum"] != ranks[0]["param_sum_before"]  # synced and moved
    assert all(n > 0 for n in ranks[0]["grad_norms"]) and len(ranks[0]["grad_norms"]) == 2


# --- two implementations of the GRPO loss, one fixed batch ----------------------------------------------
# Matching settings: zerosearch loss_agg token-mean <-> TRL loss_type "dapo" (one micro-batch per optimizer
# step, one step per generation: TRL normalises by the batch's loss-mask tokens); seq-mean-token-mean <->
# "grpo"; clip_eps / clip_eps_high <-> epsilon / epsilon_high; kl_loss_coef + k3 <-> beta (TRL's KL is k3) with
# use_bias_correction_kl=False (TRL's default True multiplies the KL by the importance ratio); float32 (TRL
# defaults to bf16=True, i.e. autocast);
# norm_adv_by_std <-> scale_rewards "group"/"none"; adv_eps 1e-4 <-> TRL's fixed 1e-4.
# No match (not tested, documented in the README): TRL dr_grpo (a constant normaliser), bnpo/dapo over several
# micro-batches (TRL's local or average token counts vs zerosearch's exact mini-batch count), cispo/sapo/
# luspo/vespo, scale_rewards "batch", delta (two-sided clip), sequence-level importance sampling;
# zerosearch's seq-mean-token-sum, KL estimators k1/k2/abs, entropy under a seq-mean aggregation (TRL's
# entropy bonus is always a token mean, hence entropy_coef 0 in the "grpo" case), a group of one sample
# (advantage 0 in zerosearch, NaN-guarded in TRL).
PROMPTS = [[5, 17, 93, 204, 11], [5, 17, 93, 204, 11], [7, 3, 8, 31, 402, 19, 6], [7, 3, 8, 31, 402, 19, 6]]
COMPLETIONS = [[40, 41, 42, 43, 44, 45], [50, 51, 52, 53, 54, 55, 56, 57, 58], [60, 61, 62, 63], [70, 71, 72, 73, 74, 75, 76, 77]]
ENV_MASKS = [[1, 1, 0, 0, 1, 1], [1, 1, 1, 0, 0, 0, 0, 1, 1], [1, 1, 1, 1], [1, 0, 0, 1, 1, 1, 1, 1]]
REWARDS = [1.0, 0.0, 0.5, 0.25]


def _fixed_rollout(prompts: list[Any], trainer: Any) -> dict[str, Any]:
    return {"prompt_ids": PROMPTS, "completion_ids": COMPLETIONS, "logprobs": None, "env_mask": ENV_MASKS}


def _fixed_reward(prompts: list[Any], **_: Any) -> list[float]:
    return list(REWARDS)


@pytest.mark.parametrize("loss_agg,loss_type,entropy_coef", [("token-mean", "dapo", 0.01),
                                                               ("seq-mean-token-mean", "grpo", 0.0)])
def test_grpo_loss_and_gradient_match_trl(tmp_path: Path, loss_agg: str, loss_type: str, entropy_coef: float) -> None:
    from datasets import Dataset

    from zerosearch.algorithms import GRPO, RolloutBatch
    from zerosearch.models import load
    from zerosearch.agent.rollout import compute_logprobs

    torch.manual_seed(0)
    model, tok = load("tiny-random", dtype="float32", device="cpu", seed=0)
    model.save_pretrained(tmp_path / "policy")  # TRL builds its reference model from this path
    tok.save_pretrained(tmp_path / "policy")
    model, tok = load(str(tmp_path / "policy"), dtype="float32", device="cpu")
    beta, eps, eps_high = 0.04, 0.2, 0.28
    args = trl.GRPOConfig(output_dir=str(tmp_path / "out"), per_device_train_batch_size=4, num_generations=2,
                          generation_batch_size=4, gradient_accumulation_steps=1, max_steps=1, beta=beta,
                          epsilon=eps, epsilon_high=eps_high, loss_type=loss_type, entropy_coef=entropy_coef,
                          scale_rewards="group", use_cpu=True, report_to="none", remove_unused_columns=False,
                          max_completion_length=16, temperature=1.0, disable_tqdm=True, bf16=False,
                          use_bias_correction_kl=False)  # TRL's default True weights the KL by the ratio
    os.environ["TRL_EXPERIMENTAL_SILENCE"] = "1"
    trainer = trl.GRPOTrainer(model=model, processing_class=tok, args=args, reward_funcs=[_fixed_reward],
                              train_dataset=Dataset.from_dict({"prompt": ["a", "a", "b", "b"]}),
                              rollout_func=_fixed_rollout)
    policy = trainer.model
    with torch.no_grad():  # move the policy off the reference, so the KL term and its gradient are not 0
        g = torch.Generator().manual_seed(1)
        for p in policy.parameters():
            p.add_(0.02 * torch.randn(p.shape, generator=g))
    policy.train()
    trainer.current_gradient_accumulation_steps = 1
    inputs = trainer._generate_and_score_completions([{"prompt": p} for p in ("a", "a", "b", "b")])

    batch = {"input_ids": torch.cat([inputs["prompt_ids"], inputs["completion_ids"]], 1),
             "attention_mask": torch.cat([inputs["prompt_mask"], inputs["completion_mask"]], 1),
             "response_mask": inputs["completion_mask"]}
    batch["position_ids"] = (batch["attention_mask"].cumsum(-1) - 1).clamp(min=0)
    mask = (inputs["completion_mask"] * inputs["tool_mask"]).float()
    assert mask.tolist() == [m + [0] * (9 - len(m)) for m in ENV_MASKS]  # env_mask became TRL's loss mask
    now = compute_logprobs(policy, batch)
    old = now + 1.2 * (torch.rand(now.shape, generator=torch.Generator().manual_seed(2)) - 0.5)  # some clipped
    inputs["old_per_token_logps"] = old

    policy.zero_grad()
    loss_trl = trainer._compute_loss(policy, inputs)
    loss_trl.backward()
    grad_trl = [p.grad.clone() for p in policy.parameters()]

    policy.zero_grad()
    algo = GRPO(clip_eps=eps, clip_eps_high=eps_high, entropy_coef=entropy_coef, kl_loss_coef=beta,
                kl_loss_kind="k3", adv_eps=1e-4, norm_adv_by_std=True, loss_agg=loss_agg)
    rb = RolloutBatch(scores=torch.tensor(REWARDS), mask=mask, old_logp=old,
                      ref_logp=compute_logprobs(trainer.ref_model, batch), group_ids=[0, 0, 1, 1])
    adv, _ = algo.compute_advantages(rb)
    assert torch.allclose(adv, inputs["advantages"][:, None] * mask, atol=1e-6)  # same A_i on the policy tokens
    rb.advantages = adv
    logp, ent = compute_logprobs(policy, batch, grad=True, with_entropy=True)
    loss_zs, stats = algo.actor_loss(rb, logp, ent)
    loss_zs.backward()
    grad_zs = [p.grad.clone() for p in policy.parameters()]

    assert 0 < float(stats["clipfrac"]) < 1  # the clipped branch is exercised
    assert float(stats["kl_loss"]) > 0
    # Tolerance: float32, and TRL passes no position_ids (a left-padded row's RoPE positions are shifted,
    # which changes nothing mathematically: attention depends on relative positions only).
    assert float(loss_zs) == pytest.approx(float(loss_trl), rel=1e-5, abs=1e-6)
    num = max(float((a - b).abs().max()) for a, b in zip(grad_zs, grad_trl))
    scale = max(float(b.abs().max()) for b in grad_trl)
    print(f"[{loss_agg}/{loss_type}] loss zerosearch {float(loss_zs):.8f} trl {float(loss_trl):.8f}; "
          f"max |grad diff| {num:.3g} of max |grad| {scale:.3g}")
    assert scale > 0 and num <= 1e-4 * scale, f"max |grad diff| {num:.3g} vs max |grad| {scale:.3g}"


# --- the vLLM paths, on their interfaces (no vLLM/GPU here) ------------------------------------------------
def _fake_trainer(mode: str, vg: Any, step: int = 0) -> Any:
    from types import SimpleNamespace as ns

    args = ns(use_vllm=True, vllm_mode=mode, vllm_server_base_url=None, vllm_server_host="127.0.0.1",
              vllm_server_port=8123, vllm_server_timeout=5.0)
    return ns(args=args, vllm_generation=vg, state=ns(global_step=step),
              accelerator=ns(process_index=0, num_processes=1), eos_token_ids=[0])


def _scripted_rollout(tok: Any) -> Any:
    from zerosearch.data.qa import QARecord
    from zerosearch.engines.base import Document, SearchEngine
    from zerosearch.integrations.trl import ZeroSearchRollout
    from zerosearch.agent.rollout import RolloutConfig

    class Docs(SearchEngine):
        name = "docs"

        def __init__(self) -> None:
            self.noise: list[float | None] = []

        def search(self, requests: list[Any]) -> list[list[Document]]:
            self.noise += [r.noise_prob for r in requests]
            return [[Document(title="t", text="Paris is the capital.", source="x")] for _ in requests]

    recs = [QARecord(id="q1", question="Capital of France?", golden_answers=["Paris"], data_source="w")]
    return ZeroSearchRollout(recs, Docs(), tok, RolloutConfig(max_turns=2, max_new_tokens_per_turn=30, n=1,
                             temperature=0.8, top_p=0.9), total_rollouts=4, opt_steps_per_rollout=2)


def _turns(tok: Any) -> list[list[int]]:
    return [tok("<search> capital of france </search>", add_special_tokens=False).input_ids,
            tok("<answer> Paris </answer>", add_special_tokens=False).input_ids]


def test_vllm_server_mode_sends_stop_strings_and_keeps_logprobs(monkeypatch: pytest.MonkeyPatch) -> None:
    from types import SimpleNamespace as ns

    from zerosearch.training.curriculum import Curriculum
    from zerosearch.integrations.trl import VLLMServerBackend
    from zerosearch.models import load

    tok = load("tiny-random")[1]
    turns = _turns(tok)

    class FakeClient:  # trl.generation.vllm_client.VLLMClient.generate's documented signature and output
        def __init__(self, **kw: Any) -> None:
            self.kw, self.calls = kw, []

        def generate(self, prompts: list[list[int]], n: int = 1, temperature: float = 1.0, top_p: float = 1.0,
                     top_k: int = 0, max_tokens: int = 16, logprobs: int | None = 0,
                     generation_kwargs: dict | None = None, **_: Any) -> dict[str, Any]:
            self.calls.append(dict(prompts=prompts, n=n, temperature=temperature, top_p=top_p, top_k=top_k,
                                   max_tokens=max_tokens, logprobs=logprobs, generation_kwargs=generation_kwargs))
            ids = turns[len(self.calls) - 1]
            return {"prompt_ids": prompts, "completion_ids": [ids for _ in prompts],
                    "logprobs": [[[-0.25] for _ in ids] for _ in prompts]}

    ro = _scripted_rollout(tok)
    client = FakeClient()
    out = ro(["Capital of France?"], _fake_trainer("server", ns(vllm_client=client), step=2))
    c = client.calls[0]
    assert (c["n"], c["temperature"], c["top_p"], c["top_k"], c["max_tokens"], c["logprobs"]) == (1, 0.8, 0.9, 0, 30, 0)
    assert c["generation_kwargs"] == {"stop": ["</search>", "</answer>"], "include_stop_str_in_output": True}
    assert c["prompts"] == out["prompt_ids"]
    mask, lp = out["env_mask"][0], out["logprobs"][0]
    assert len(lp) == len(mask) == len(out["completion_ids"][0])
    assert all(x == (-0.25 if m else 0.0) for x, m in zip(lp, mask))  # 0 on the inserted information block
    assert out["completion_ids"][0][: len(turns[0])] == turns[0] and out["completion_ids"][0][-len(turns[1]):] == turns[1]
    # global_step 2 with 2 optimizer steps per rollout: 1 rollout done, so this is rollout 2 of 4
    assert ro.engine.noise == [Curriculum(0.0, 0.5, 4).p(2)]
    backend = VLLMServerBackend(FakeClient(), tok, [tok.eos_token_id])
    assert backend.generate([[1, 2]], 30, ["</search>"], 1.0, 1.0, 0)[0].stopped_by == "stop"

    # a non-main rank has no client (TRL builds it on the main process only): the rollout makes its own
    import trl.generation.vllm_client as vc

    monkeypatch.setattr(vc, "VLLMClient", FakeClient)
    vg = ns(vllm_client=None)
    _scripted_rollout(tok)(["Capital of France?"], _fake_trainer("server", vg))
    assert vg.vllm_client.kw == {"base_url": "http://127.0.0.1:8123", "connection_timeout": 5.0}


def test_vllm_colocate_mode_uses_trls_llm(monkeypatch: pytest.MonkeyPatch) -> None:
    import types
    from types import SimpleNamespace as ns

    from zerosearch.models import load

    tok = load("tiny-random")[1]
    turns = _turns(tok)
    vllm = types.ModuleType("vllm")
    vllm.SamplingParams = lambda **kw: ns(**kw)
    monkeypatch.setitem(sys.modules, "vllm", vllm)

    class FakeLLM:  # vllm.LLM.generate's output objects, as zerosearch.agent.generation.VLLMBackend reads them
        def __init__(self) -> None:
            self.calls: list[Any] = []

        def generate(self, prompts: list[Any], params: list[Any], use_tqdm: bool = False) -> list[Any]:
            self.calls.append(params)
            ids = turns[len(self.calls) - 1]
            stop = "</search>" if len(self.calls) == 1 else "</answer>"
            return [ns(outputs=[ns(token_ids=ids, finish_reason="stop", stop_reason=stop,
                                   logprobs=[{t: ns(logprob=-0.5)} for t in ids])]) for _ in prompts]

    llm = FakeLLM()
    ro = _scripted_rollout(tok)
    out = ro(["Capital of France?", "Capital of France?"], _fake_trainer("colocate", ns(llm=llm)))
    params = llm.calls[0]
    assert [p.stop for p in params] == [["</search>", "</answer>"]] * 2 and all(p.n == 1 for p in params)
    assert len({p.seed for p in params}) == 2  # two samples of one prompt: two seeds
    assert len(out["completion_ids"]) == 2 and ro.last[0].end == "answer"
    assert all(x == (-0.5 if m else 0.0) for x, m in zip(out["logprobs"][0], out["env_mask"][0]))


# --- one config language: the mapping and its errors ----------------------------------------------------
def test_grpo_config_from_the_shared_sections(tmp_path: Path) -> None:
    from zerosearch.integrations.trl import grpo_config, plan

    cfg = tiny_config()
    sizes = plan(cfg, 2)
    # 2 questions x 2 samples = 4 trajectories a rollout, mini-batch 4, micro 2 x 2 processes
    assert sizes == {"trajectories_per_rollout": 4, "per_device_train_batch_size": 2, "gradient_accumulation_steps": 1,
                     "steps_per_generation": 1, "num_iterations": 1, "opt_steps_per_rollout": 1, "max_steps": 2}
    args = grpo_config(tiny_config(["optim.ppo_epochs=2", "algorithm.clip_eps=0.1", "algorithm.kl_loss_coef=0.01",
                                    "algorithm.loss_agg=seq-mean-token-mean", "rollout.temperature=0.7"]), tmp_path, 1)
    assert (args.max_steps, args.num_iterations, args.gradient_accumulation_steps, args.steps_per_generation) == (4, 2, 2, 2)
    assert (args.num_generations, args.epsilon, args.epsilon_high, args.beta, args.loss_type, args.temperature) == \
        (2, 0.1, 0.1, 0.01, "grpo", 0.7)
    assert args.bf16 is False and args.weight_decay == 0.0 and args.remove_unused_columns is False
    assert args.use_bias_correction_kl is False  # zerosearch's plain k3 KL term


@pytest.mark.parametrize("override,message", [
    ("trl.max_steps=9", "max_steps \\(set train.steps\\)"),
    ("trl.num_generations=4", "set rollout.n"),
    ("algorithm.name=ppo", "GRPO-family losses only"),
    ("algorithm.loss_agg=seq-mean-token-sum", "no TRL loss with the same normalisation"),
    ("algorithm.kl_loss_kind=k1", "k3 estimator only"),
    ("trl.loss_type=grpo", "contradicts algorithm.loss_agg"),
    ("trl.mask_truncated_completions=true", "stop string, not at EOS"),
    ("optim.mini_batch_size=3", "multiple of optim.mini_batch_size"),
])
def test_grpo_config_errors_name_the_field(tmp_path: Path, override: str, message: str) -> None:
    from zerosearch.integrations.trl import grpo_config

    cfg = tiny_config([override]) if not override.startswith("algorithm.name") else None
    if cfg is None:  # TrainConfig accepts ppo's hyper-parameters, train-trl must refuse the algorithm
        cfg = tiny_config(["algorithm={name: ppo}"])
    with pytest.raises(ValueError, match=message):
        grpo_config(cfg, tmp_path, 1)
    if override == "trl.loss_type=grpo":  # a TRL-only loss is a TRL-only knob, allowed
        assert grpo_config(tiny_config(["trl.loss_type=dr_grpo"]), tmp_path, 1).loss_type == "dr_grpo"


# --- the command: config, metrics, rollouts.json, final/, refusal, resume --------------------------------

def _train_trl(out: Path, *extra: str) -> subprocess.CompletedProcess:
    from trl_doubles import CONFIG, OVERRIDES

    env = _subprocess_env()
    # weight decay on: a random policy earns no reward here, so only the decay moves the weights between runs
    small = [o for o in OVERRIDES if not o.startswith(("train.steps=", "optim.lr=", "optim.weight_decay="))]
    cmd = [sys.executable, "-m", "zerosearch", "train-trl", "--config", str(CONFIG), *small, "train.save_every=1",
           *extra, "--out", str(out)]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)


@pytest.mark.timeout(1800)
def test_train_trl_command_exports_final_refuses_a_second_run_and_resumes(tmp_path: Path) -> None:
    """`zerosearch train-trl` as a user runs it: a final/ that zerosearch loads, one metrics row and one
    rollouts.json entry per rollout; the same --out again is refused; --resume continues from TRL's
    checkpoint to the new train.steps instead of starting over."""
    from zerosearch.models import load

    out = tmp_path / "run"
    first = _train_trl(out, "train.steps=2")
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    assert "last step:" in first.stdout and (out / "config.yaml").is_file()
    assert len(json.loads((out / "rollouts.json").read_text())) == 2
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "loss" in r] == [1, 2]  # one optimizer step per rollout here
    model, tok = load(str(out / "final"))
    assert sum(p.numel() for p in model.parameters()) > 0 and tok.eos_token_id is not None
    assert not (out / ".final.tmp").exists()
    final_weights = (out / "final" / "model.safetensors").read_bytes()

    again = _train_trl(out, "train.steps=2")
    assert again.returncode != 0 and "already holds a run" in (again.stdout + again.stderr)
    assert (out / "final" / "model.safetensors").read_bytes() == final_weights  # the refusal touched nothing

    resumed = _train_trl(out, "train.steps=3", "--resume")
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    last = max(out.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
    state = json.loads((last / "trainer_state.json").read_text())
    assert state["global_step"] == state["max_steps"] == 3
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "loss" in r] == [1, 2, 3]  # continued: rollout 3 follows 1 and 2
    final = (out / "final" / "model.safetensors").read_bytes()
    assert final != final_weights and final == (last / "model.safetensors").read_bytes()  # the resumed policy
