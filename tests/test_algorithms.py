"""zerosearch.algorithms on hand-computed tensors (arithmetic in the comments)."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from zerosearch import algorithms
from zerosearch.algorithms import GRPO, PPO, Reinforce, ReinforcePP, RolloutBatch
from zerosearch.algorithms.advantages import (
    discounted_returns,
    gae,
    grpo_advantages,
    kl_shaped_token_rewards,
    masked_mean,
    masked_var,
    masked_whiten,
    outcome_token_rewards,
    reinforce_advantages,
    reinforce_pp_advantages,
)
from zerosearch.algorithms.kl import kl_penalty
from zerosearch.algorithms.losses import (
    agg_loss,
    entropy_from_logits,
    kl_loss,
    logprobs_from_logits,
    policy_loss,
    value_loss,
)

T = torch.tensor


def close(a: torch.Tensor, b: list | float, atol: float = 1e-6) -> None:
    torch.testing.assert_close(a, torch.as_tensor(b, dtype=a.dtype), atol=atol, rtol=0)


# ------------------------------------------------------------------------------------------------- KL
def test_kl_estimators_by_hand():
    logp, ref = T([-1.0, -2.0, -0.5]), T([-1.5, -2.0, 0.5])
    # d = logp - ref = [0.5, 0, -1]
    close(kl_penalty(logp, ref, "k1"), [0.5, 0.0, -1.0])
    close(kl_penalty(logp, ref, "k2"), [0.125, 0.0, 0.5])  # 0.5 d^2
    # k3 = exp(-d) + d - 1: exp(-0.5) - 0.5 = 0.1065307; 0; e - 2 = 0.7182818
    close(kl_penalty(logp, ref, "k3"), [math.exp(-0.5) - 0.5, 0.0, math.e - 2])
    close(kl_penalty(logp, ref, "abs"), [0.5, 0.0, 1.0])
    with pytest.raises(ValueError):
        kl_penalty(logp, ref, "k4")  # type: ignore[arg-type]


def test_k3_is_clamped_as_verl_does():
    # veRL's low_var_kl: -d clamped to [-20, 20], then k3 clamped to [-10, 10]. -d = -1000 -> -20:
    # exp(-20) + 19 -> 10; -d = +1000 -> 20: exp(20) - 21 -> 10 (finite, not inf); -d = 2: e^2 - 3 = 4.389.
    logp = T([0.0, -1000.0, -2.0, -12.0], dtype=torch.float64, requires_grad=True)
    ref = T([-1000.0, 0.0, 0.0, 0.0], dtype=torch.float64)
    k3 = kl_penalty(logp, ref, "k3")
    close(k3, [10.0, 10.0, math.exp(2) - 3, 10.0])
    # The value clamp is what bounds a runaway token: beyond k3 = 10 its gradient is 0, not exp(-d) - 1
    # (at -d = 12 that would be 162753.8).
    k3.sum().backward()
    close(logp.grad, [0.0, 0.0, 1 - math.exp(2), 0.0])


# ------------------------------------------------------------------------------------ masked statistics
def test_masked_stats_and_whiten():
    x, m = T([[1.0, 2.0, 100.0], [3.0, float("nan"), 5.0]]), T([[1, 1, 0], [1, 0, 1]])
    # kept {1, 2, 3, 5}: mean 11/4 = 2.75; squared deviations 3.0625 + 0.5625 + 0.0625 + 5.0625 = 8.75
    close(masked_mean(x, m), 2.75)
    close(masked_var(x, m), 8.75 / 3)  # unbiased
    close(masked_var(x, m, unbiased=False), 8.75 / 4)
    close(masked_mean(x, m, dim=-1), [1.5, 4.0])
    s = math.sqrt(8.75 / 3 + 1e-8)
    close(masked_whiten(x, m), [[-1.75 / s, -0.75 / s, 0.0], [0.25 / s, 0.0, 2.25 / s]])
    # shift_mean=False: the mean is added back, only the spread is rescaled
    expected = [[2.75 - 1.75 / s, 2.75 - 0.75 / s, 0.0], [2.75 + 0.25 / s, 0.0, 2.75 + 2.25 / s]]
    close(masked_whiten(x, m, shift_mean=False), expected)
    # nothing masked in: 0, not NaN
    z = torch.zeros(2, 3)
    assert masked_mean(x, z) == 0 and masked_var(x, z) == 0 and (masked_whiten(x, z) == 0).all()


# ------------------------------------------------------------------------------------- token rewards
def test_outcome_token_rewards_at_last_policy_token():
    mask = T([[1, 1, 0, 0], [1, 0, 1, 0], [0, 0, 0, 0]])
    close(outcome_token_rewards(T([0.5, 1.0, 0.7]), mask), [[0, 0.5, 0, 0], [0, 0, 1.0, 0], [0, 0, 0, 0]])


def test_kl_shaped_token_rewards():
    # d = [-1 - -1.5, (masked), -2 - -1] = [0.5, -, -1]; r = -0.1 d (+1 at the last policy token)
    logp, ref = T([[-1.0, 3.0, -2.0]]), T([[-1.5, -9.0, -1.0]])
    r = kl_shaped_token_rewards(T([1.0]), T([[1, 0, 1]]), logp, ref, 0.1)
    close(r, [[-0.05, 0.0, 0.1 + 1.0]])


# ----------------------------------------------------------------------------------------------- GRPO
def test_grpo_string_group_ids_interleaved():
    # Rows of two datasets whose per-dataset row index is 0 for both: a per-dataset index would merge them.
    ids = ["nq-0", "hotpotqa-0", "nq-0", "hotpotqa-0", "nq-0", "nq-7"]
    scores = T([1.0, 0.2, 0.0, 0.6, 0.5, 0.9])
    mask = torch.ones(6, 2)
    mask[1, 1] = 0
    adv = grpo_advantages(scores, ids, mask, eps=1e-6)
    # nq-0: {1, 0, 0.5}, mean 0.5, unbiased std sqrt((0.25 + 0.25 + 0) / 2) = 0.5 -> (r - 0.5) / 0.500001
    a_nq = [0.5 / 0.500001, -0.5 / 0.500001, 0.0]
    # hotpotqa-0: {0.2, 0.6}, mean 0.4, std sqrt((0.04 + 0.04) / 1) = 0.2828427 -> -+0.2 / 0.2828437
    s_hq = math.sqrt(0.08) + 1e-6
    # nq-7: a group of one has no comparison -> 0
    per_row = [a_nq[0], -0.2 / s_hq, a_nq[1], 0.2 / s_hq, a_nq[2], 0.0]
    expected = torch.tensor(per_row)[:, None].repeat(1, 2)
    expected[1, 1] = 0.0  # masked-out token
    close(adv, expected)
    # Not normalised by std: r - mean
    close(grpo_advantages(scores, ids, mask, norm_by_std=False)[:, 0], [0.5, -0.2, -0.5, 0.2, 0.0, 0.0])
    # Tensor ids are compared by value, not by identity
    close(grpo_advantages(scores, torch.tensor([0, 1, 0, 1, 0, 7]), mask), adv)
    with pytest.raises(ValueError):
        grpo_advantages(scores, ids[:-1], mask)


def test_grpo_identical_scores_give_zero_not_nan():
    adv = grpo_advantages(T([1.0, 1.0, 1.0]), ["q", "q", "q"], torch.ones(3, 2))
    assert (adv == 0).all()


# ------------------------------------------------------------------------------------------------ GAE
def test_gae_skips_masked_out_middle_token():
    gamma, lam = 0.9, 0.8  # gamma * lam = 0.72
    rewards = T([[0.0, 0.0, 0.0, 1.0]])
    values = T([[0.5, 9.9, 0.6, 0.7]])  # 9.9 sits on a retrieved token: it must never be used
    mask = T([[1, 0, 1, 1]])
    adv, ret = gae(rewards, values, mask, gamma, lam)
    # policy steps: t=0, 2, 3 with V = 0.5, 0.6, 0.7
    # t=3: delta = 1 + 0.9 * 0 - 0.7 = 0.3;                  A = 0.3
    # t=2: delta = 0 + 0.9 * 0.7 - 0.6 = 0.03;               A = 0.03 + 0.72 * 0.3 = 0.246
    # t=0: delta = 0 + 0.9 * 0.6 - 0.5 = 0.04 (bootstraps from t=2 across the block)
    #                                                        A = 0.04 + 0.72 * 0.246 = 0.21712
    close(adv, [[0.21712, 0.0, 0.246, 0.3]])
    close(ret, [[0.21712 + 0.5, 0.0, 0.246 + 0.6, 0.3 + 0.7]])  # R = A + V
    # the value on the masked-out token has no influence
    adv2, _ = gae(rewards, T([[0.5, -123.0, 0.6, 0.7]]), mask, gamma, lam)
    close(adv2, adv)


def test_gae_trailing_padding_and_empty_row():
    # gamma = lam = 1 (PPO defaults): A_t = sum of rewards from t - V_t
    rewards = T([[0.0, 2.0, 0.0], [0.0, 0.0, 0.0]])
    adv, ret = gae(rewards, T([[1.0, 0.5, 7.0], [3.0, 3.0, 3.0]]), T([[1, 1, 0], [0, 0, 0]]), 1.0, 1.0)
    # row 0: t=1: 2 - 0.5 = 1.5; t=0: 0 + 0.5 - 1 + 1.5 = 1.0; returns = [2, 2]
    close(adv, [[1.0, 1.5, 0.0], [0.0, 0.0, 0.0]])
    close(ret, [[2.0, 2.0, 0.0], [0.0, 0.0, 0.0]])


# ------------------------------------------------------------------------------------------ REINFORCE
def test_plain_reinforce_broadcasts_raw_score():
    mask = T([[1, 0, 1], [1, 1, 0]])
    close(reinforce_advantages(T([0.5, 0.0]), mask), [[0.5, 0.0, 0.5], [0.0, 0.0, 0.0]])


def test_reinforce_pp_returns_and_whitening():
    scores, mask = T([1.0, 0.0]), T([[1, 1, 0], [1, 0, 1]])
    logp = T([[0.1, -0.2, 5.0], [0.3, 7.0, 0.0]])
    ref = torch.zeros(2, 3)  # k1 = logp at policy tokens
    # beta = 0.5: r = -0.5 k1 (+ score at the last policy token)
    #   row 0: [-0.05, 0.1 + 1 = 1.1, -]     row 1: [-0.15, -, 0 + 0 = 0]
    # gamma = 0.5 over policy tokens: row 0: G = [-0.05 + 0.5 * 1.1, 1.1] = [0.5, 1.1]
    #                                 row 1: G = [-0.15 + 0.5 * 0, 0] = [-0.15, 0]  (skips the middle)
    adv, ret = reinforce_pp_advantages(scores, mask, logp, ref, beta=0.5, gamma=0.5)
    close(ret, [[0.5, 1.1, 0.0], [-0.15, 0.0, 0.0]])
    # batch whitening over {0.5, 1.1, -0.15, 0}: mean 1.45 / 4 = 0.3625;
    # deviations 0.1375, 0.7375, -0.5125, -0.3625; squares sum 0.956875; unbiased var 0.956875 / 3
    s = math.sqrt(0.956875 / 3 + 1e-8)
    close(adv, [[0.1375 / s, 0.7375 / s, 0.0], [-0.5125 / s, 0.0, -0.3625 / s]])


def test_discounted_returns_gamma_one_is_reward_to_go():
    close(discounted_returns(T([[1.0, 2.0, 3.0]]), T([[1, 0, 1]]), 1.0), [[4.0, 0.0, 3.0]])  # 2 is ignored


# ------------------------------------------------------------------------------------------- losses
def test_agg_modes_and_empty_rows():
    loss = T([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0], [float("nan"), 8.0, 9.0]])
    mask = T([[1, 1, 1], [0, 1, 0], [0, 0, 0]])  # row 2 has no policy token (and a NaN in padding)
    close(agg_loss(loss, mask, "token-mean"), 11 / 4)  # (1 + 2 + 3 + 5) / 4
    close(agg_loss(loss, mask, "seq-mean-token-sum"), 11 / 3)  # (6 + 5 + 0) / 3 rows
    close(agg_loss(loss, mask, "seq-mean-token-mean"), 7 / 3)  # (2 + 5 + 0) / 3 rows
    for mode in ("token-mean", "seq-mean-token-sum", "seq-mean-token-mean"):
        assert agg_loss(loss, torch.zeros(3, 3), mode) == 0  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        agg_loss(loss, mask, "sum")  # type: ignore[arg-type]


def test_clipped_surrogate_inside_and_outside_the_clip_range():
    ratio = T([[1.1, 1.5, 0.5, 0.5, 1.5]])
    adv = T([[1.0, 1.0, 1.0, -1.0, -1.0]])
    # -min(rho A, clip(rho, 0.8, 1.2) A):
    #   A=+1, rho=1.1 inside:            -min(1.1, 1.1)   = -1.1
    #   A=+1, rho=1.5 above:             -min(1.5, 1.2)   = -1.2   (clipped, no gradient)
    #   A=+1, rho=0.5 below:             -min(0.5, 0.8)   = -0.5   (unclipped: pessimistic side)
    #   A=-1, rho=0.5 below:             -min(-0.5, -0.8) =  0.8   (clipped, no gradient)
    #   A=-1, rho=1.5 above:             -min(-1.5, -1.2) =  1.5   (unclipped)
    per_token = [-1.1, -1.2, -0.5, 0.8, 1.5]
    logp = ratio.log().requires_grad_()
    loss, stats = policy_loss(logp, torch.zeros(1, 5), adv, torch.ones(1, 5), clip_eps=0.2)
    close(loss, sum(per_token) / 5)
    close(stats["clipfrac"], 2 / 5)
    close(stats["ratio_mean"], 5.1 / 5)
    # approx KL(old || new), k3 with r = rho: (rho - 1) - log rho, averaged
    close(stats["approx_kl"], sum(r - 1 - math.log(r) for r in ratio[0].tolist()) / 5)
    loss.backward()
    # d/dlogp of -rho A / 5 = -rho A / 5 where unclipped, 0 where clipped
    close(logp.grad, [[-1.1 / 5, 0.0, -0.5 / 5, 0.0, 1.5 / 5]])
    # clip-higher: eps_high = 0.6 lets rho = 1.5 through for A > 0
    loss_hi, _ = policy_loss(ratio.log(), torch.zeros(1, 5), adv, torch.ones(1, 5), 0.2, clip_eps_high=0.6)
    close(loss_hi, (-1.1 - 1.5 - 0.5 + 0.8 + 1.5) / 5)


def test_clipped_value_loss():
    values, old, returns = T([[1.0, 2.0, 0.2]]), T([[0.0, 1.8, 1.0]]), T([[0.0, 2.5, 0.0]])
    # t0: V_clip = 0 + clip(1, +-0.5) = 0.5; max((1-0)^2, (0.5-0)^2) = 1      -> 0.5
    # t1: V_clip = 1.8 + 0.2 = 2.0;          max(0.25, 0.25)              = 0.25   -> 0.125
    # t2: V_clip = 1 + clip(-0.8) = 0.5;     max(0.04, 0.25)              = 0.25   -> 0.125 (clipped wins)
    loss, stats = value_loss(values, old, returns, torch.ones(1, 3), clip=0.5)
    close(loss, (0.5 + 0.125 + 0.125) / 3)
    close(stats["vf_clipfrac"], 1 / 3)


def test_entropy_uniform_is_log_v_and_peaked_is_stable():
    close(entropy_from_logits(torch.zeros(2, 3, 7)), torch.full((2, 3), math.log(7)).tolist())
    h = entropy_from_logits(T([[1000.0, 0.0, -1000.0]]))
    assert torch.isfinite(h).all() and h.abs().max() < 1e-6


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_logprobs_from_logits_matches_log_softmax(dtype):
    g = torch.Generator().manual_seed(0)
    logits = (torch.randn(2, 3, 11, generator=g) * 3).to(dtype)
    labels = torch.randint(0, 11, (2, 3), generator=g)
    expected = torch.log_softmax(logits.double(), -1).gather(-1, labels[..., None]).squeeze(-1)
    got = logprobs_from_logits(logits, labels)
    torch.testing.assert_close(got.double(), expected, atol=1e-5, rtol=0)


# ------------------------------------------------------------------------------------------ KL sign
def test_kl_loss_is_added_so_a_step_moves_toward_the_reference():
    ref = T([[-1.0, -2.0, -0.5]])
    logp = T([[-0.5, -3.0, -0.5]]).requires_grad_()
    mask = torch.ones(1, 3)
    # GRPO's actor with equal scores (A = 0) and no entropy: the gradient comes from + beta * KL only
    algo = GRPO(kl_loss_coef=0.5, entropy_coef=0.0)
    batch = RolloutBatch(T([1.0]), mask, logp.detach().clone(), ref, group_ids=["q"])
    batch = dataclasses.replace(batch, advantages=algo.compute_advantages(batch)[0])
    loss, stats = algo.actor_loss(batch, logp, None)
    loss.backward()
    # d k3 / d logp = 1 - exp(ref - logp): positive above the reference, negative below
    assert logp.grad[0, 0] > 0 and logp.grad[0, 1] < 0 and logp.grad[0, 2] == 0
    with torch.no_grad():
        stepped = logp - 0.1 * logp.grad
    assert ((stepped - ref).abs() <= (logp - ref).abs()).all()
    assert kl_loss(stepped, ref, mask) < stats["kl_loss"]


# ------------------------------------------------------------------ the loss mask, end to end
ALGOS = [GRPO(), PPO(), ReinforcePP(), Reinforce(), PPO(gamma=0.9, lam=0.8, whiten_advantages=False)]


@pytest.mark.parametrize("agg", ["token-mean", "seq-mean-token-sum", "seq-mean-token-mean"])
@pytest.mark.parametrize("algo", ALGOS, ids=lambda a: repr(a))
def test_masked_tokens_get_exactly_zero_gradient(algo, agg):
    algo = dataclasses.replace(algo, loss_agg=agg)
    g = torch.Generator().manual_seed(0)
    B, L, V = 3, 6, 5
    mask = T([[1, 1, 0, 0, 1, 1], [1, 1, 1, 1, 0, 0], [0, 0, 0, 0, 0, 0]])  # info block; padding; empty row
    off = mask == 0
    logits = torch.randn(B, L, V, generator=g).requires_grad_()
    labels = torch.randint(0, V, (B, L), generator=g)
    new_logp = logprobs_from_logits(logits, labels)
    entropy = entropy_from_logits(logits)
    # old/ref log-probs near the new ones (ratio inside the clip range); garbage where masked out
    old_logp = (new_logp.detach() + 0.01 * torch.randn(B, L, generator=g)).masked_fill(off, 30.0)
    ref_logp = (new_logp.detach() + 0.3 * torch.randn(B, L, generator=g)).masked_fill(off, -30.0)
    values = torch.randn(B, L, generator=g).masked_fill(off, 1e6)
    batch = RolloutBatch(T([1.0, 0.2, 0.7]), mask, old_logp, ref_logp, values, ["q1", "q1", "q2"])
    adv, ret = algo.compute_advantages(batch)
    assert torch.isfinite(adv).all() and (adv[off] == 0).all()
    batch = dataclasses.replace(batch, advantages=adv, returns=ret)

    loss, stats = algo.actor_loss(batch, new_logp, entropy)
    assert torch.isfinite(loss) and all(torch.isfinite(v) for v in stats.values())
    loss.backward()
    assert (logits.grad[off] == 0).all()  # EXACTLY zero on retrieved tokens, padding, the empty row
    assert (logits.grad[~off].abs().sum(-1) > 0).all()  # every policy token is trained

    if algo.uses_critic:
        new_values = values.clone().requires_grad_()
        vloss, _ = algo.critic_loss(batch, new_values)
        vloss.backward()
        assert torch.isfinite(vloss) and (new_values.grad[off] == 0).all()
        assert (new_values.grad[~off] != 0).all()


def test_actor_loss_fully_masked_batch_is_zero_not_nan():
    mask = torch.zeros(2, 3)
    logp = torch.zeros(2, 3, requires_grad=True)
    zeros = torch.zeros(2, 3)
    batch = RolloutBatch(T([1.0, 0.0]), mask, zeros, ref_logp=zeros, values=zeros, group_ids=["a", "a"])
    for algo in (GRPO(), PPO(), ReinforcePP(), Reinforce()):
        adv, ret = algo.compute_advantages(batch)
        filled = dataclasses.replace(batch, advantages=adv, returns=ret)
        loss, _ = algo.actor_loss(filled, logp, torch.ones(2, 3))
        assert loss == 0


# ----------------------------------------------------------------------- algorithms: composition
def test_ppo_compute_advantages_by_hand():
    # one row, mask [1, 0, 1], k1 = [0.5, -, -1], beta 0.1: r = [-0.05, -, 0.1 + 1 = 1.1]; V = [0.2, -, 0.4]
    # gamma = lam = 1: t=2: A = 1.1 - 0.4 = 0.7; t=0: A = -0.05 + 0.4 - 0.2 + 0.7 = 0.85; R = [1.05, -, 1.1]
    batch = RolloutBatch(
        T([1.0]), T([[1, 0, 1]]), T([[-1.0, 3.0, -2.0]]), T([[-1.5, -9.0, -1.0]]), T([[0.2, 5.0, 0.4]])
    )
    adv, ret = PPO(kl_coef=0.1, whiten_advantages=False).compute_advantages(batch)
    close(adv, [[0.85, 0.0, 0.7]])
    close(ret, [[1.05, 0.0, 1.1]])
    # kl_coef = 0 needs no reference model
    no_ref = dataclasses.replace(batch, ref_logp=None)
    adv0, _ = PPO(kl_coef=0.0, whiten_advantages=False).compute_advantages(no_ref)
    close(adv0, [[1.0 - 0.2, 0.0, 1.0 - 0.4]])


def test_actor_loss_sums_the_terms():
    logp = T([[-1.0, -2.0]])
    ref = T([[-1.5, -2.0]])
    ent = T([[0.3, 0.5]])
    batch = RolloutBatch(T([1.0]), torch.ones(1, 2), logp, ref, group_ids=["q"], advantages=T([[2.0, -1.0]]))
    loss, stats = Reinforce(kl_loss_coef=0.1, entropy_coef=0.01).actor_loss(batch, logp, ent)
    # ratio 1: pg = mean(-A) = -0.5; k3 = [exp(-0.5) - 0.5, 0] -> mean 0.0532653; H mean 0.4
    kl = (math.exp(-0.5) - 0.5) / 2
    close(loss, -0.5 + 0.1 * kl - 0.01 * 0.4)
    close(stats["pg_loss"], -0.5)
    close(stats["kl_loss"], kl)
    close(stats["entropy"], 0.4)
    with pytest.raises(ValueError):
        Reinforce().actor_loss(batch, logp, None)  # entropy_coef != 0 needs the entropy


def test_registry_and_requirements():
    assert isinstance(algorithms.get("grpo"), GRPO)
    assert isinstance(algorithms.get("reinforce"), Reinforce)
    assert algorithms.get("ppo", gamma=0.9).gamma == 0.9
    assert sorted(algorithms.ALGORITHMS) == ["grpo", "ppo", "reinforce", "reinforce_pp"]
    assert [algorithms.get(n).uses_critic for n in ("grpo", "ppo", "reinforce_pp", "reinforce")] == [
        False, True, False, False
    ]
    assert GRPO().needs_ref and not GRPO(kl_loss_coef=0).needs_ref
    with pytest.raises(ValueError):
        algorithms.get("dpo")
    with pytest.raises(ValueError, match="group_ids"):
        GRPO().compute_advantages(RolloutBatch(T([1.0]), torch.ones(1, 2), torch.zeros(1, 2)))


def test_batch_select_rows():
    batch = RolloutBatch(T([1.0, 2.0, 3.0]), torch.ones(3, 2), torch.zeros(3, 2), group_ids=["a", "b", "c"])
    mb = batch.select(T([2, 0]))
    close(mb.scores, [3.0, 1.0])
    assert mb.group_ids == ["c", "a"] and mb.ref_logp is None and mb.mask.shape == (2, 2)
