"""The units of a training step, each on its own with hand-made tensors and fakes (tests/test_trainer.py runs
them together end to end): the update (zerosearch.training.update) against a hand-computed gradient, the same
whatever the micro-batch size, in the seeded mini-batch order; scoring a rollout (training.scoring): the
loss mask, the temperature, the sampler's log-probs, the reference and the critic; the run state
(training.state): a save -> resume round trip; the step's metrics and sample rows (training.report)."""

from __future__ import annotations

import math
import random
from contextlib import contextmanager
from types import SimpleNamespace
from typing import Any

import pytest
import torch

from zerosearch import algorithms
from zerosearch.agent.rollout import Rollout, RolloutStats, Trajectory, collate
from zerosearch.algorithms.batch import RolloutBatch
from zerosearch.training.config import OptimSection
from zerosearch.training.curriculum import Curriculum
from zerosearch.training.monitors import CollapseMonitor, FailedSearchPolicy, MonitorSettings
from zerosearch.training.report import sample_row, skip_metrics, step_metrics, trained_samples
from zerosearch.training.scoring import nonfinite_logprobs, reference_model, sampling_temperature, score_rollout
from zerosearch.training.state import RunState, resume, save
from zerosearch.training.trainer import step_records, warmup
from zerosearch.training.update import MiniBatchUpdate, ValueModel

V = 4  # vocabulary of the hand-made policy
PAD = 3


class Unigram(torch.nn.Module):
    """A policy whose logits are one learned vector at every position: log pi(y) = b_y - logsumexp(b), so a
    gradient is easy to write down by hand. Records the first input token (the row's prompt) of every forward."""

    def __init__(self, bias: list[float] | None = None):
        super().__init__()
        self.bias = torch.nn.Parameter(torch.tensor(bias if bias is not None else [0.0] * V))
        self.seen: list[list[int]] = []

    def forward(self, input_ids: torch.Tensor, **_: Any) -> Any:
        self.seen.append(input_ids[:, 0].tolist())
        return SimpleNamespace(logits=self.bias.expand(*input_ids.shape, V))


def traj(i: int, response: list[int], info: list[int] | None = None, reward: float = 0.0, **kw: Any) -> Trajectory:
    return Trajectory(row_id=f"q{i}", group_id=i, sample=0, data_source="t", question=f"question {i}",
                      golden_answers=["a"], prompt_ids=[i], response_ids=response,
                      info_mask=info if info is not None else [1] * len(response), reward=reward, **kw)


def scored(trajs: list[Trajectory], advantages: list[list[float]], values: bool = False) -> tuple[dict, RolloutBatch]:
    """The batch and a RolloutBatch as scoring leaves it for an untrained Unigram (old log-probs = log 1/V)."""
    batch = collate(trajs, PAD)
    mask = batch["response_mask"].float()
    adv = torch.zeros_like(mask)
    for b, a in enumerate(advantages):
        adv[b, :len(a)] = torch.tensor(a)
    rb = RolloutBatch(scores=batch["rewards"], mask=mask, old_logp=-math.log(V) * mask, advantages=adv,
                      group_ids=[t.group_id for t in trajs],
                      values=torch.zeros_like(mask) if values else None, returns=mask.clone() if values else None)
    return batch, rb


def optim(**kw: Any) -> OptimSection:
    return OptimSection(**{"weight_decay": 0.0, "grad_clip": 10.0, "mini_batch_size": 8, "micro_batch_size": 8, **kw})


def sgd_update(policy: torch.nn.Module, batch: dict, rb: RolloutBatch, o: OptimSection, loss_agg: str = "token-mean",
               seed: int = 0) -> dict[str, float]:
    # SGD with lr 1: the parameter change is minus the gradient, exactly
    algo = algorithms.get("grpo", kl_loss_coef=0.0, entropy_coef=0.0, loss_agg=loss_agg)
    opt = torch.optim.SGD(policy.parameters(), lr=1.0)
    return MiniBatchUpdate(policy, opt, algo, o, temperature=1.0)(batch, rb, seed)


# --- the update ----------------------------------------------------------------------------------------

# Row 0 answers token 1 twice with advantage +1, row 1 token 2 once with advantage -1. With ratio 1,
# d/db of -A * pi/pi_old is -A * (e_y - softmax(b)), softmax(0) = 1/4 everywhere:
#   token-mean (over 3 tokens):      (-2 e1 + e2 + u) / 3          = [1, -7, 5, 1] / 12
#   seq-mean-token-mean (per row):   (-(e1 - u) + (e2 - u)) / 2   = [0, -1/2, 1/2, 0]
HAND = {"token-mean": ([1 / 12, -7 / 12, 5 / 12, 1 / 12], -1 / 3),
        "seq-mean-token-mean": ([0.0, -0.5, 0.5, 0.0], 0.0)}


@pytest.mark.parametrize("loss_agg", sorted(HAND))
@pytest.mark.parametrize("micro", [1, 2])
def test_the_update_follows_the_hand_computed_gradient_whatever_the_micro_batch(loss_agg: str, micro: int) -> None:
    grad, pg_loss = HAND[loss_agg]
    batch, rb = scored([traj(0, [1, 1]), traj(1, [2])], [[1.0, 1.0], [-1.0]])
    policy = Unigram()
    stats = sgd_update(policy, batch, rb, optim(micro_batch_size=micro), loss_agg)
    torch.testing.assert_close(policy.bias.detach(), -torch.tensor(grad), atol=1e-6, rtol=0)
    assert stats["grad_norm"] == pytest.approx(math.sqrt(sum(g * g for g in grad)), abs=1e-6)
    assert stats["pg_loss"] == pytest.approx(pg_loss, abs=1e-6)
    assert stats["ratio_mean"] == pytest.approx(1.0) and not policy.training  # left in eval mode


def test_each_mini_batch_is_one_optimizer_step_in_the_seeded_order_without_the_global_rng() -> None:
    trajs = [traj(i, [1, 2][: 1 + i % 2]) for i in range(3)]
    batch, rb = scored(trajs, [[1.0], [0.5, 0.5], [-1.0]])
    policy = Unigram()
    opt = torch.optim.SGD(policy.parameters(), lr=0.1)
    steps: list[int] = []
    opt.register_step_post_hook(lambda *_: steps.append(1))
    o = optim(ppo_epochs=2, mini_batch_size=2, micro_batch_size=1)
    rng = torch.get_rng_state()
    MiniBatchUpdate(policy, opt, algorithms.get("grpo", kl_loss_coef=0.0, entropy_coef=0.0), o,
                    temperature=1.0)(batch, rb, seed=7)
    assert torch.equal(torch.get_rng_state(), rng)  # a resumed run draws the same order
    assert len(steps) == 2 * 2  # ppo_epochs x ceil(3 / 2) mini-batches
    gen = torch.Generator().manual_seed(7)
    order = [r for _ in range(2) for r in torch.randperm(3, generator=gen).tolist()]
    assert [rows for rows in policy.seen] == [[r] for r in order]  # one row per micro-batch, in that order


class ConstantCritic(torch.nn.Module):
    """V_t = v at every response token: its value loss's gradient is mean_t(v - R_t)."""

    def __init__(self) -> None:
        super().__init__()
        self.v = torch.nn.Parameter(torch.zeros(()))
        self.modes: list[bool] = []
        self.rows: list[int] = []

    def forward(self, batch: dict) -> torch.Tensor:
        self.modes.append(self.training)
        self.rows.append(batch["response_mask"].shape[0])
        return self.v * batch["response_mask"].float()


def test_the_critic_is_trained_toward_the_returns_beside_the_policy() -> None:
    batch, rb = scored([traj(0, [1, 1]), traj(1, [2])], [[1.0, 1.0], [-1.0]], values=True)
    policy, critic = Unigram(), ConstantCritic()
    critic_opt = torch.optim.SGD(critic.parameters(), lr=1.0)
    algo = algorithms.get("ppo", kl_coef=0.0, entropy_coef=0.0)
    stats = MiniBatchUpdate(policy, torch.optim.SGD(policy.parameters(), lr=1.0), algo, optim(micro_batch_size=1),
                            temperature=1.0, critic=critic, critic_opt=critic_opt)(batch, rb, seed=0)
    # V = 0, R = 1 on every token: loss 0.5 (V - R)^2, gradient -1, so one SGD step of lr 1 gives V = 1
    assert float(critic.v.detach()) == pytest.approx(1.0) and stats["vf_loss"] == pytest.approx(0.5)
    assert critic.modes == [True, True] and critic.v.grad is None  # trained, and its gradient cleared
    torch.testing.assert_close(policy.bias.detach(), -torch.tensor(HAND["token-mean"][0]), atol=1e-6, rtol=0)


def test_the_value_model_reads_the_position_before_each_response_token() -> None:
    from zerosearch.models import load

    model = load("tiny-random", seed=0)[0].eval()
    batch = collate([traj(0, [5, 6, 7], reward=1.0), traj(1, [8])], 0)
    critic = ValueModel(model).eval()
    with torch.no_grad():
        assert (critic(batch) == 0).all() and critic(batch).shape == (2, 3)  # V = 0 at the start
        torch.nn.init.ones_(critic.v_head.weight)
        hidden = model.get_decoder()(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                                     position_ids=batch["position_ids"]).last_hidden_state
        want = hidden[:, 0:3].sum(-1) * batch["response_mask"]  # prompt length 1: column P + t - 1 = t
        torch.testing.assert_close(critic(batch), want, atol=1e-5, rtol=0)


# --- scoring a rollout --------------------------------------------------------------------------------


def test_scoring_applies_the_loss_mask_and_the_sampling_temperature() -> None:
    # Row 0: the policy wrote tokens 1 and 2, the rollout inserted token 0 between them (retrieved text).
    trajs = [traj(0, [1, 0, 2], info=[1, 0, 1], reward=1.0), traj(1, [2], reward=0.0)]
    batch = collate(trajs, PAD)
    policy = Unigram([0.0, math.log(4.0), 0.0, 0.0])
    T = 2.0
    logp = torch.log_softmax(policy.bias.detach() / T, -1)
    want = torch.tensor([[logp[1], logp[0], logp[2]], [logp[2], 0.0, 0.0]])
    for on, mask in ((True, batch["info_mask"]), (False, batch["response_mask"])):
        rb = score_rollout(trajs, batch, policy=policy, optim=optim(), loss_mask=on, temperature=T)
        assert torch.equal(rb.mask, mask.float()) and rb.mask.dtype == torch.float32
        torch.testing.assert_close(rb.old_logp, want)  # every response token scored; the mask says which train
        assert rb.ref_logp is None and rb.values is None
        assert torch.equal(rb.scores, torch.tensor([1.0, 0.0])) and rb.group_ids == [0, 1]
    assert sampling_temperature(0.0) == 1.0 and sampling_temperature(0.7) == 0.7  # greedy: scored at T = 1


def test_the_samplers_logprobs_are_reused_only_when_only_policy_tokens_train() -> None:
    # -9 at the inserted token: the sampler did not write it, so its log-prob is never used
    trajs = [traj(0, [1, 0, 2], info=[1, 0, 1], sampler_logprobs=[-0.5, -9.0, -0.25])]
    batch = collate(trajs, PAD)
    policy = Unigram()
    reuse = optim(reuse_sampler_logprobs=True)
    rb = score_rollout(trajs, batch, policy=policy, optim=reuse, loss_mask=True, temperature=1.0)
    assert policy.seen == [] and rb.old_logp.tolist() == [[-0.5, 0.0, -0.25]]  # no forward pass
    rb = score_rollout(trajs, batch, policy=policy, optim=reuse, loss_mask=False, temperature=1.0)
    assert len(policy.seen) == 1 and rb.old_logp[0, 1] == pytest.approx(-math.log(V))  # inserted tokens need it


def test_scoring_asks_the_reference_and_the_critic_in_eval_mode() -> None:
    trajs = [traj(i, [1, 2]) for i in range(3)]
    batch = collate(trajs, PAD)
    ref, critic = Unigram([0.0, 1.0, 2.0, 3.0]), ConstantCritic()
    critic.train()  # as the update leaves it
    rb = score_rollout(trajs, batch, policy=Unigram(), optim=optim(micro_batch_size=2), loss_mask=True,
                       temperature=1.0, reference=lambda: reference_model(None, ref), critic=critic)
    want = torch.log_softmax(ref.bias.detach(), -1)[[1, 2]].expand(3, 2)
    torch.testing.assert_close(rb.ref_logp, want)
    assert critic.modes == [False, False] and critic.rows == [2, 1]  # micro-batches of 2, no dropout
    assert rb.values is not None and rb.values.shape == (3, 2)


def test_the_reference_is_the_frozen_copy_or_the_policy_with_its_adapter_off() -> None:
    events: list[str] = []

    class Peft:
        @contextmanager
        def disable_adapter(self):
            events.append("off")
            yield
            events.append("on")

    policy, copy = Peft(), object()
    with reference_model(policy, copy) as m:
        assert m is copy and events == []
    with reference_model(policy, None) as m:
        assert m is policy and events == ["off"]
    assert events == ["off", "on"]


def test_nonfinite_logprobs_count_old_and_reference() -> None:
    old = torch.tensor([[0.0, float("nan")], [float("-inf"), -1.0]])
    rb = RolloutBatch(scores=torch.zeros(2), mask=torch.ones(2, 2), old_logp=old)
    assert nonfinite_logprobs(rb) == 2
    rb.ref_logp = torch.tensor([[float("inf"), 0.0], [0.0, 0.0]])
    assert nonfinite_logprobs(rb) == 3


# --- the run state: save -> resume ----------------------------------------------------------------------


class StatefulEngine:
    def __init__(self, draws: int = 0):
        self.draws = draws

    def state_dict(self) -> dict[str, int]:
        return {"draws": self.draws}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.draws = state["draws"]


def parts(critic: bool) -> tuple[torch.nn.Module, torch.nn.Module | None, RunState]:
    policy = torch.nn.Linear(3, 2)
    value = torch.nn.Linear(3, 1) if critic else None
    opt = torch.optim.AdamW(policy.parameters(), lr=0.1)
    copt = torch.optim.AdamW(value.parameters(), lr=0.2) if value is not None else None
    state = RunState(opt, torch.optim.lr_scheduler.LambdaLR(opt, warmup(0.5, 8)), Curriculum(0.0, 0.5, 8),
                     FailedSearchPolicy(), CollapseMonitor(MonitorSettings()), StatefulEngine(),
                     copt, torch.optim.lr_scheduler.LambdaLR(copt, warmup(0.5, 8)) if copt is not None else None)
    return policy, value, state


def test_save_then_resume_restores_weights_optimizers_schedulers_rngs_and_counters(tmp_path) -> None:
    policy, critic, state = parts(critic=True)
    for model, opt, sched in ((policy, state.opt, state.sched), (critic, state.critic_opt, state.critic_sched)):
        model(torch.randn(4, 3)).sum().backward()
        opt.step()
        sched.step()
    state.failures.record(True, "test")
    state.monitor.update({"reward": 0.5, "response_tokens": 10.0})
    state.engine.draws = 9
    ckpt = save(tmp_path, 7, state, policy=policy, critic=critic, config_yaml="a: 1\n", keep=2)
    after_save = (torch.rand(3), random.random())

    fresh_policy, fresh_critic, fresh = parts(critic=True)
    torch.manual_seed(123)
    random.seed(123)
    step, where = resume(tmp_path, fresh, policy=fresh_policy, critic=fresh_critic, config_yaml="a: 1\n")
    assert (step, where) == (7, ckpt)
    for a, b in ((policy, fresh_policy), (critic, fresh_critic)):
        assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    for a, b in ((state.opt, fresh.opt), (state.critic_opt, fresh.critic_opt)):
        sa, sb = a.state_dict()["state"], b.state_dict()["state"]
        assert sa.keys() == sb.keys() and all(torch.equal(sa[k]["exp_avg"], sb[k]["exp_avg"]) for k in sa)
    assert fresh.sched.last_epoch == 1 and fresh.sched.get_last_lr() == state.sched.get_last_lr()
    assert fresh.critic_sched.last_epoch == 1
    assert fresh.failures.skipped == 1 and fresh.monitor.state_dict() == state.monitor.state_dict()
    assert fresh.engine.draws == 9
    assert torch.equal(torch.rand(3), after_save[0]) and random.random() == after_save[1]  # the RNGs, restored


def test_the_checkpoints_trainer_state_layout() -> None:
    _, _, state = parts(critic=False)
    assert list(state.state_dict()) == ["optimizer", "scheduler", "rng", "curriculum", "engine", "failures",
                                        "monitor"]
    _, _, state = parts(critic=True)
    state.engine = object()  # an engine with no state of its own
    assert list(state.state_dict()) == ["optimizer", "scheduler", "rng", "curriculum", "critic_optimizer",
                                        "critic_scheduler", "failures", "monitor"]


def test_resume_refuses_a_run_without_checkpoints_or_with_another_config(tmp_path) -> None:
    policy, _, state = parts(critic=False)
    with pytest.raises(ValueError, match="--resume: no checkpoint under"):
        resume(tmp_path, state, policy=policy, critic=None, config_yaml="a: 1\n")
    save(tmp_path, 1, state, policy=policy, critic=None, config_yaml="a: 1\n", keep=2)
    with pytest.raises(ValueError, match="saved under a different config"):
        resume(tmp_path, state, policy=policy, critic=None, config_yaml="a: 2\n")


def test_resume_skips_a_truncated_newest_checkpoint_and_names_it(tmp_path, capsys) -> None:
    policy, _, state = parts(critic=False)
    first = save(tmp_path, 1, state, policy=policy, critic=None, config_yaml="a: 1\n", keep=2)
    second = save(tmp_path, 2, state, policy=policy, critic=None, config_yaml="a: 1\n", keep=2)
    weights = second / "policy.safetensors"
    weights.write_bytes(weights.read_bytes()[:-8])
    fresh_policy, _, fresh = parts(critic=False)
    assert resume(tmp_path, fresh, policy=fresh_policy, critic=None, config_yaml="a: 1\n") == (1, first)
    assert "step-000002 skipped" in capsys.readouterr().err
    (first / "trainer.pt").write_bytes(b"")
    with pytest.raises(ValueError, match=r"is intact:(.|\n)*trainer.pt"):
        resume(tmp_path, fresh, policy=fresh_policy, critic=None, config_yaml="a: 1\n")


# --- the step's record ------------------------------------------------------------------------------------

STEP_KEYS = ["reward", "reward_std", "f1", "em", "response_tokens", "policy_tokens", "turns", "searches",
             "valid_action_rate", "answered_rate", "noise_prob", "noisy_draws", "useful_draws", "engine_fallbacks",
             "truncated_tokens", "tokens_per_s", "time_rollout", "time_engine", "time_update", "time_step",
             "failed_searches", "skipped", "skipped_total", "nonfinite"]


def fake_rollout() -> Rollout:
    trajs = [traj(0, [1, 0, 2], info=[1, 0, 1], reward=1.0, metrics={"f1": 1.0, "em": 1.0}, draws=["noisy"]),
             traj(1, [2], reward=0.0, metrics={"f1": 0.5, "em": 0.0}, draws=["useful"])]
    return Rollout(trajs, RolloutStats.of(trajs, backend_calls=1, engine_calls=1, gen_seconds=2.0,
                                          engine_seconds=0.5, seconds=3.0))


class CharTok:
    def decode(self, ids: list[int], skip_special_tokens: bool = True) -> str:
        return "".join("abcd"[i] for i in ids)


def test_the_metrics_row_of_a_trained_step() -> None:
    ro = fake_rollout()
    batch = collate(ro, PAD)
    rb = RolloutBatch(scores=batch["rewards"], mask=batch["info_mask"].float(), old_logp=torch.zeros(2, 3))
    m = step_metrics(ro, rb, noise_prob=0.25, failed=1, skipped_total=2, update={"pg_loss": 0.1, "lr": 1e-3},
                     counters={"engine/leak_flagged": 3}, t_rollout=1.5, t_update=0.25, t_step=2.0)
    assert list(m) == [*STEP_KEYS, "pg_loss", "lr", "engine/leak_flagged"]  # no "kl" without a reference
    assert m["reward"] == 0.5 and m["reward_std"] == pytest.approx(math.sqrt(0.5)) and m["f1"] == 0.75
    assert (m["noisy_draws"], m["useful_draws"], m["time_rollout"], m["skipped_total"]) == (1, 1, 1.0, 2)
    rb.ref_logp = torch.full((2, 3), -1.0)  # k3(old = 0, ref = -1) = e^-1 - 1 + 1 = e^-1 per trained token
    assert step_metrics(ro, rb, noise_prob=0.0, failed=0, skipped_total=0, update={}, counters={}, t_rollout=0.0,
                        t_update=0.0, t_step=0.0)["kl"] == pytest.approx(math.exp(-1))


def test_the_sample_rows_carry_the_loss_mask_and_the_advantage_of_a_trained_step() -> None:
    ro = fake_rollout()
    batch = collate(ro, PAD)
    rb = RolloutBatch(scores=batch["rewards"], mask=batch["info_mask"].float(), old_logp=torch.zeros(2, 3),
                      advantages=torch.tensor([[1.0, 9.0, 0.5], [-1.0, 0.0, 0.0]]))
    rows = trained_samples(ro, CharTok(), rb, 1)
    assert len(rows) == 1 and rows[0]["loss_mask"] == [["b", 1], ["a", 0], ["c", 1]]
    assert rows[0]["advantage"] == 0.75  # mean over the trained tokens only: (1 + 0.5) / 2
    assert rows[0]["draws"] == ["noisy"] and rows[0]["group"] == 0
    assert "loss_mask" not in sample_row(ro[0]) and "advantage" not in sample_row(ro[0])  # a skipped step's


def test_the_metrics_row_of_a_skipped_step_says_why() -> None:
    base = dict(noise_prob=0.5, why="dead engine", failed=4, searches=4, skipped_total=3, nonfinite=0, lr=0.1,
                counters={"engine/fallbacks": 4})
    m = skip_metrics(None, **base)
    assert m == {"noise_prob": 0.5, "failed_searches": 4, "searches_total": 4, "skipped": 1, "skipped_total": 3,
                 "skip_reason": "dead engine", "nonfinite": 0, "lr": 0.1, "engine/fallbacks": 4}
    with_rollout = skip_metrics(fake_rollout(), **base)
    assert with_rollout["reward"] == 0.5 and with_rollout["response_tokens"] == 2.0 and "pg_loss" not in with_rollout


# --- which questions a step trains on -------------------------------------------------------------------


def test_each_epoch_of_steps_is_a_seeded_permutation_of_the_data() -> None:
    data = [SimpleNamespace(id=i) for i in range(5)]
    epoch = [r.id for s in range(5) for r in step_records(data, s, 1, seed=3)]
    assert sorted(epoch) == list(range(5)) and epoch != list(range(5))
    assert [r.id for r in step_records(data, 1, 2, seed=3)] == epoch[2:4]  # step s: items s*bs .. (s+1)*bs
    second = [r.id for s in range(5, 10) for r in step_records(data, s, 1, seed=3)]
    assert sorted(second) == list(range(5))  # the next epoch: again every question once
    assert [r.id for r in step_records(data, 2, 2, seed=3)] == [epoch[4], second[0]]  # a step across the two
    assert [r.id for r in step_records(data, 0, 5, seed=4)] != epoch  # another seed, another order
