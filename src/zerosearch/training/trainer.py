"""The RL trainer: rollout against a (simulated) engine, score, update, repeat.

One step, top to bottom (`Trainer.step`):
  1. p = curriculum(step)                      noise probability sent with every search query
  2. rollout(batch of questions x n samples)   multi-turn: <search> -> engine -> <information> -> ...
  3. old / ref log-probs, critic values        no-grad forward passes over the finished trajectories
  4. advantages                                algorithms.<name>.compute_advantages (pure functions)
  5. update                                    ppo_epochs x mini-batches, gradient accumulation over
                                               micro-batches; the loss mask is batch.mask (`_rollout_batch`)
  6. metrics.jsonl / TensorBoard / samples.jsonl, dev-batch eval, atomic checkpoint

Health (zerosearch.training.monitors): every engine answers one real query before step 1; a step whose searches
mostly failed, or whose log-probs are not finite, is skipped (not trained on) and counted, and a run
that keeps failing stops with its last checkpoint intact; the engine's own counters (leak guard,
fallbacks) are logged as per-step deltas; collapse monitors raise `alarm/*` metrics. The dev batch runs
on a real or answer-blind engine only (zerosearch.evaluation.dev_eval).

Determinism: the batch of step i, the sampling seeds, the mini-batch order and the engine's draws all
derive from (seed, i) or live in the checkpoint, so `--resume` continues to the same result as an
uninterrupted run.
"""

from __future__ import annotations

import copy
import dataclasses
import random
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from zerosearch import algorithms
from zerosearch.algorithms.advantages import masked_mean
from zerosearch.algorithms.batch import RolloutBatch
from zerosearch.algorithms.kl import kl_penalty
from zerosearch.training.checkpoint import list_checkpoints, load_checkpoint, rng_state, save_checkpoint, set_rng_state
from zerosearch.training.config import TrainConfig, dump_config
from zerosearch.training.curriculum import Curriculum, FixedSchedule, NoiseSchedule
from zerosearch.data.qa import QARecord, load_qa
from zerosearch.evaluation.dev_eval import dev_engine, dev_engine_config
from zerosearch.evaluation.dev_eval import evaluate as evaluate_dev
from zerosearch.engines import EngineConfig, SearchEngine, SearchError, SearchRequest, build_engine
from zerosearch.engines.self_search import bind_policy
from zerosearch.agent.generation import HFBackend
from zerosearch.io import atomic_write_text
from zerosearch.training.metrics import MetricsLogger, plot_run
from zerosearch.models import load
from zerosearch.training.monitors import (
    CollapseMonitor,
    EngineCounters,
    FailedSearchPolicy,
    MonitorSettings,
    TrainingHalted,
    check_engine,
    counter_note,
    search_failures,
)
from zerosearch.training.packing import (
    length_sorted,
    logprobs_by_length,
    logprobs_by_prompt,
    prompt_sorted,
    row_lengths,
    shared_prompt_logprobs,
    trim_columns,
)
from zerosearch.agent.precision import autocast
from zerosearch.agent.precision import check as check_precision
from zerosearch.agent.prefix_cache import budget_tokens
from zerosearch.agent.rollout import Rollout, RolloutConfig, collate, compute_logprobs, rollout
from zerosearch.training.mask_runs import loss_mask_runs


class ValueModel(torch.nn.Module):
    """PPO's critic: the policy's architecture without the LM head, plus a scalar head. V_t is read at the
    position that predicts response token t (the same alignment as the policy's log-probs)."""

    def __init__(self, causal_lm: Any):
        super().__init__()
        self.backbone = causal_lm.get_decoder()
        self.v_head = torch.nn.Linear(causal_lm.config.hidden_size, 1)
        torch.nn.init.zeros_(self.v_head.weight)  # V = 0 at the start: no arbitrary initial baseline
        torch.nn.init.zeros_(self.v_head.bias)

    def forward(self, batch: dict[str, Tensor]) -> Tensor:
        device = self.v_head.weight.device
        R = batch["response_mask"].shape[1]
        hidden = self.backbone(input_ids=batch["input_ids"].to(device),
                               attention_mask=batch["attention_mask"].to(device),
                               position_ids=batch["position_ids"].to(device)).last_hidden_state[:, -R - 1:-1]
        return self.v_head(hidden).squeeze(-1).float() * batch["response_mask"].to(device)


def resolve_data(cfg: TrainConfig) -> tuple[list[QARecord], list[QARecord], Path | None]:
    """Train and dev records; "world" means the built-in synthetic world (generated once, cached)."""
    world_dir = None
    if "world" in (cfg.data.train, cfg.data.dev):
        from zerosearch.data.world import WorldConfig, cached_world

        world_dir = cached_world(WorldConfig(**cfg.data.world), cfg.data.world_dir)
    pick = lambda spec, split: load_qa(world_dir / f"{split}.jsonl" if spec == "world" else spec)
    train = pick(cfg.data.train, "train")
    dev = pick(cfg.data.dev, "dev")[: cfg.data.dev_size] if cfg.data.dev else []
    if not train:
        raise ValueError(f"data.train {cfg.data.train!r} has no questions")
    return train, dev, world_dir


def engine_config(d: dict[str, Any], world_dir: Path | None) -> EngineConfig:
    """An engine config; `corpus: world` points a real engine at the synthetic world's corpus."""
    cfg = EngineConfig.from_dict(d)
    if cfg.corpus == "world" and world_dir is None:  # a training run names its world in data, never implicitly
        raise ValueError("engine corpus 'world' needs data.train or data.dev to be 'world'")
    return cfg.on_world(world_dir)


class Trainer:
    def __init__(self, cfg: TrainConfig, run_dir: str | Path, *, resume: bool = False, progress: bool = True,
                 engine: SearchEngine | None = None, eval_engine: SearchEngine | None = None):
        """`engine` / `eval_engine` replace the configured ones (tests pass fakes; a gold-seeing
        `eval_engine` is refused like a configured one)."""
        self.cfg, self.run_dir, self.show_progress = cfg, Path(run_dir), progress
        self.config_yaml = dump_config(cfg)
        if self.cfg.rollout.backend != "hf":
            raise ValueError("the trainer generates with rollout.backend=hf; vLLM serves evaluation and the "
                             "simulator (weight sync into a vLLM engine during training is not implemented)")
        if (self.run_dir / "metrics.jsonl").exists() and not resume:
            raise ValueError(f"{self.run_dir} already holds a run; pass --resume to continue it or choose "
                             "another --out (nothing is overwritten)")
        random.seed(cfg.train.seed)
        torch.manual_seed(cfg.train.seed)
        self.train_data, self.dev_data, world_dir = resolve_data(cfg)

        m = cfg.model
        self.policy, self.tok = load(m.name, dtype=m.dtype, device=m.device, seed=cfg.train.seed)
        self.device = next(self.policy.parameters()).device
        self.algo = algorithms.get(**{"name": "grpo", **cfg.algorithm})
        self.ref = None
        if m.lora_r > 0:
            from peft import LoraConfig, get_peft_model

            self.policy = get_peft_model(self.policy, LoraConfig(r=m.lora_r, lora_alpha=m.lora_alpha,
                                                                 lora_dropout=m.lora_dropout,
                                                                 target_modules=list(m.lora_targets)))
        elif self.algo.needs_ref:  # with LoRA the reference is the base model: the adapter switched off
            self.ref = copy.deepcopy(self.policy).eval().requires_grad_(False)
        if m.gradient_checkpointing:
            self.policy.gradient_checkpointing_enable()
        self.critic = None
        if self.algo.uses_critic:
            self.critic = ValueModel(load(m.name, dtype=m.dtype, device=m.device, seed=cfg.train.seed)[0]).to(self.device)

        o = cfg.optim
        check_precision(o.precision, self.device)
        self.opt = torch.optim.AdamW([p for p in self.policy.parameters() if p.requires_grad], lr=o.lr,
                                     betas=o.betas, weight_decay=o.weight_decay)
        # Schedulers step once per *training* step (in `step`), so warm-up is counted in training steps
        # as in veRL, however many optimizer steps a training step makes.
        self.sched = torch.optim.lr_scheduler.LambdaLR(self.opt, warmup(o.warmup_ratio, cfg.train.steps))
        if self.critic is not None:
            self.critic_opt = torch.optim.AdamW(self.critic.parameters(), lr=o.critic_lr, betas=o.betas,
                                                weight_decay=o.weight_decay)
            self.critic_sched = torch.optim.lr_scheduler.LambdaLR(
                self.critic_opt, warmup(o.critic_warmup_ratio, cfg.train.steps))

        c = cfg.curriculum
        self.schedule: NoiseSchedule = FixedSchedule(c.fixed) if c.fixed is not None else \
            Curriculum(c.p_start, c.p_end, cfg.train.steps, c.base)
        self.engine = engine or build_engine(engine_config(cfg.engine, world_dir))
        self.eval_engine, self._owned_eval_engine = None, None
        if self.dev_data and cfg.train.eval_every:
            dev_cfg = dev_engine_config(cfg.engine, cfg.eval_engine, cfg.data.dev, self.engine.is_simulator)
            self.eval_engine, self._owned_eval_engine = dev_engine(self.engine, dev_cfg, world_dir, eval_engine)
        r = cfg.rollout
        self.rollout_cfg = RolloutConfig(max_turns=r.max_turns, max_new_tokens_per_turn=r.max_new_tokens_per_turn,
                                         max_obs_tokens=r.max_obs_tokens, max_prompt_tokens=r.max_prompt_tokens,
                                         max_total_tokens=r.max_total_tokens, k=self.engine_k(), n=r.n,
                                         temperature=r.temperature, top_p=r.top_p, format_weight=r.format_weight)
        kv_tokens = budget_tokens(cfg.train.batch_size * r.n, r.max_total_tokens) if o.reuse_kv_cache else 0
        self.backend = HFBackend(self.policy, self.tok, batch_size=r.batch_size, logprobs=o.reuse_sampler_logprobs,
                                 kv_cache_tokens=kv_tokens, precision=o.precision)
        for e in (self.engine, self.eval_engine):  # a `self` engine writes its documents with this policy
            bind_policy(e, self.backend, self.tok)
        self.check_engines()  # before _resume: a resumed engine's RNG is the checkpoint's, not the probe's
        self.failures = FailedSearchPolicy(cfg.train.max_failed_search_share, cfg.train.max_consecutive_failed_steps)
        self.monitor = CollapseMonitor(MonitorSettings(**cfg.monitor.model_dump()))
        self.start_step = 0
        self.last_saved: Path | None = None
        if resume:
            self._resume()
        self.counters = EngineCounters(self.engine)
        self.logger = MetricsLogger(self.run_dir, resume_step=self.start_step if resume else None)

    def engine_k(self) -> int:
        return int(self.cfg.engine.get("k", 5))

    def check_engines(self) -> None:
        """One real query to every engine (the first training question, as useful: no RNG draw)."""
        rec = self.train_data[0]
        request = SearchRequest(query=rec.question, k=self.engine_k(), row_id=rec.id, question=rec.question,
                                golden_answers=list(rec.golden_answers), mode="useful")
        check_engine(self.engine, request, "training")
        if self.eval_engine is not None:
            check_engine(self.eval_engine, request, "dev")

    # --- data -------------------------------------------------------------------------------------------

    def batch_records(self, step: int) -> list[QARecord]:
        """Questions of step `step`: epochs of a seeded shuffle, so any step's batch is known in advance."""
        n, bs = len(self.train_data), self.cfg.train.batch_size
        out = []
        for g in range(step * bs, (step + 1) * bs):
            epoch, pos = divmod(g, n)
            order = list(range(n))
            random.Random(self.cfg.train.seed * 1_000_003 + epoch).shuffle(order)
            out.append(self.train_data[order[pos]])
        return out

    # --- one step ---------------------------------------------------------------------------------------

    def _temperature(self) -> float:
        # Greedy rollouts (T = 0) are scored at T = 1: there is no sampling distribution to match.
        return self.rollout_cfg.temperature if self.rollout_cfg.temperature > 0 else 1.0

    @contextmanager
    def _reference(self):
        """The frozen reference model: a copy of the initial policy, or the LoRA base (adapter off)."""
        if self.ref is not None:
            yield self.ref
        else:
            with self.policy.disable_adapter():
                yield self.policy

    def _amp(self) -> Any:
        """The context of every forward pass: bf16 autocast with optim.precision=bf16, else nothing."""
        return autocast(self.cfg.optim.precision, self.device)

    def _rollout_batch(self, ro: Rollout, batch: dict[str, Tensor]) -> RolloutBatch:
        with self._amp():
            return self._score_rollout(ro, batch)

    def _score_rollout(self, ro: Rollout, batch: dict[str, Tensor]) -> RolloutBatch:
        mb, o = self.cfg.optim.micro_batch_size, self.cfg.optim
        T = self._temperature()
        self.policy.eval()
        logprobs = logprobs_by_prompt if o.share_prompts else logprobs_by_length if o.sort_by_length else compute_logprobs
        # THE LOSS MASK: the info mask (policy tokens only) unless the ablation trains on retrieved tokens.
        mask = batch["info_mask"] if self.cfg.train.loss_mask else batch["response_mask"]
        keep = mask if o.loss_token_logits else None  # log-probs are only ever used under the loss mask
        # The sampler's log-probs are those of the policy tokens only: reusable when only those are trained.
        if o.reuse_sampler_logprobs and self.cfg.train.loss_mask and "sampler_logprobs" in batch:
            old_logp = batch["sampler_logprobs"] * batch["info_mask"]
        else:
            old_logp = logprobs(self.policy, batch, T, mb, keep=keep)
        ref_logp = None
        if self.algo.needs_ref:
            with self._reference() as ref:
                ref_logp = logprobs(ref, batch, T, mb, keep=keep)
        values = None
        if self.critic is not None:
            self.critic.eval()  # rollout values: no dropout, like the policy's old log-probs
            with torch.no_grad():
                values = torch.cat([self.critic(_rows(batch, slice(s, s + mb)))
                                    for s in range(0, len(ro), mb)]).cpu()
        return RolloutBatch(scores=batch["rewards"], mask=mask.float(), old_logp=old_logp.cpu(),
                            ref_logp=None if ref_logp is None else ref_logp.cpu(), values=values,
                            group_ids=[t.group_id for t in ro])

    def step(self, step: int) -> dict[str, Any]:
        t0 = time.perf_counter()
        p = self.schedule(step)
        try:
            ro = rollout(self.batch_records(step), self.backend, self.tok, self.engine, self.rollout_cfg,
                         noise_prob=p, seed=self.cfg.train.seed * 1_000_003 + step)
        except (SearchError, OSError) as e:  # the engine gave up mid-rollout: nothing to train on
            why = f"the engine failed: {type(e).__name__}: {e}"
            self.failures.record(True, why)
            return self._skip(step, p, why, failed=1, searches=1)
        t_rollout = time.perf_counter() - t0
        failed, searches = search_failures([t.documents for t in ro])
        if self.failures.skip(failed, searches):
            return self._skip(step, p, f"{failed} of {searches} searches failed", failed, searches, ro)
        batch = collate(ro, self.tok.pad_token_id)
        rb = self._rollout_batch(ro, batch)
        nonfinite = int((~torch.isfinite(rb.old_logp)).sum())
        if rb.ref_logp is not None:
            nonfinite += int((~torch.isfinite(rb.ref_logp)).sum())
        if self.failures.record(nonfinite > 0, f"{nonfinite} log-probs were not finite"):
            return self._skip(step, p, f"{nonfinite} non-finite log-probs", failed, searches, ro, nonfinite=nonfinite)
        adv, returns = self.algo.compute_advantages(rb)
        rb = dataclasses.replace(rb, advantages=adv, returns=returns)
        t1 = time.perf_counter()
        upd = self.update(batch, rb, step)
        self._step_schedulers()
        t_update = time.perf_counter() - t1
        s = ro.stats
        rewards = batch["rewards"]
        metrics = {
            "reward": s.mean_reward, "reward_std": float(rewards.std()) if len(rewards) > 1 else 0.0,
            "f1": _mean(t.metrics["f1"] for t in ro), "em": _mean(t.metrics["em"] for t in ro),
            "response_tokens": s.mean_response_tokens, "policy_tokens": s.mean_policy_tokens,
            "turns": s.mean_turns, "searches": s.mean_searches, "valid_action_rate": s.valid_action_rate,
            "answered_rate": s.answered_rate, "noise_prob": p,
            "noisy_draws": s.draws.get("noisy", 0), "useful_draws": s.draws.get("useful", 0),
            "engine_fallbacks": s.engine_fallbacks, "truncated_tokens": sum(s.truncation.values()),
            "tokens_per_s": s.tokens_per_s, "time_rollout": t_rollout - s.engine_seconds,
            "time_engine": s.engine_seconds, "time_update": t_update, "time_step": time.perf_counter() - t0,
            "failed_searches": failed, "skipped": 0, "skipped_total": self.failures.skipped, "nonfinite": 0,
            **upd, **self.counters.delta(),
        }
        if rb.ref_logp is not None:
            metrics["kl"] = float(masked_mean(kl_penalty(rb.old_logp, rb.ref_logp, "k3"), rb.mask))
        # The logged samples carry the loss mask this update used (rb.mask) and each one's advantage.
        self.logger.samples(step, [
            _sample(t, self.tok, rb.mask[i, :len(t.response_ids)],
                    float(masked_mean(rb.advantages[i], rb.mask[i])))
            for i, t in enumerate(ro[: self.cfg.train.samples_per_step])])
        return metrics

    def _step_schedulers(self) -> None:
        """Once per training step, trained on or skipped: lr(step) depends on the step number only."""
        self.sched.step()
        if self.critic is not None:
            self.critic_sched.step()

    def _skip(self, step: int, p: float, why: str, failed: int, searches: int, ro: Rollout | None = None,
              nonfinite: int = 0) -> dict[str, Any]:
        """A step not trained on: its metrics say why; its samples are logged so the failure can be seen."""
        self._step_schedulers()
        if ro is not None:
            self.logger.samples(step, [_sample(t) for t in ro[: self.cfg.train.samples_per_step]])
        out: dict[str, Any] = {"noise_prob": p, "failed_searches": failed, "searches_total": searches,
                               "skipped": 1, "skipped_total": self.failures.skipped, "skip_reason": why,
                               "nonfinite": nonfinite, "lr": self.sched.get_last_lr()[0], **self.counters.delta()}
        if ro is not None:
            out.update(reward=ro.stats.mean_reward, searches=ro.stats.mean_searches,
                       response_tokens=ro.stats.mean_response_tokens, engine_fallbacks=ro.stats.engine_fallbacks)
        return out

    def update(self, batch: dict[str, Tensor], rb: RolloutBatch, step: int) -> dict[str, float]:
        """ppo_epochs passes of mini-batch updates; each mini-batch accumulates micro-batch gradients
        weighted so the sum equals the mini-batch's own aggregated loss (token- or sequence-mean)."""
        o, T = self.cfg.optim, self._temperature()
        B = rb.scores.shape[0]
        gen = torch.Generator().manual_seed(self.cfg.train.seed * 1_000_003 + step)
        want_entropy = getattr(self.algo, "entropy_coef", 0) != 0
        token_mean = getattr(self.algo, "loss_agg", "token-mean") == "token-mean"
        sums: dict[str, float] = {}
        counts: dict[str, int] = {}
        self.policy.train()
        if self.critic is not None:
            self.critic.train()
        for _ in range(o.ppo_epochs):
            perm = torch.randperm(B, generator=gen)
            for s in range(0, B, o.mini_batch_size):
                mini = perm[s: s + o.mini_batch_size]
                if o.share_prompts:  # whole groups per micro-batch; the mini-batch's loss is unchanged
                    mini = prompt_sorted(mini, batch)
                elif o.sort_by_length:  # similar lengths per micro-batch; likewise
                    mini = length_sorted(mini, row_lengths(batch))
                denom = float(rb.mask[mini].sum()) if token_mean else float(len(mini))
                for m in range(0, len(mini), o.micro_batch_size):
                    idx = mini[m: m + o.micro_batch_size]
                    weight = (float(rb.mask[idx].sum()) if token_mean else float(len(idx))) / max(denom, 1.0)
                    sub, sub_rb = _trim(_rows(batch, idx), rb.select(idx))
                    keep = sub_rb.mask if o.loss_token_logits else None
                    with self._amp():  # the forward only: backward replays each op in its forward dtype
                        out = shared_prompt_logprobs(self.policy, sub, T, grad=True, with_entropy=want_entropy,
                                                     keep=keep) if o.share_prompts else \
                            compute_logprobs(self.policy, sub, T, len(idx), grad=True, with_entropy=want_entropy,
                                             keep=keep)
                    logp, ent = out if want_entropy else (out, None)
                    loss, st = self.algo.actor_loss(sub_rb, logp.cpu(), None if ent is None else ent.cpu())
                    (loss * weight).backward()
                    if self.critic is not None:
                        with self._amp():
                            v = self.critic(sub).cpu()
                        vloss, vst = self.algo.critic_loss(sub_rb, v)
                        (vloss * weight).backward()
                        st = {**st, **vst}
                    for k, v in st.items():
                        sums[k] = sums.get(k, 0.0) + float(v) * weight
                        counts[k] = counts.get(k, 0) + 1
                gn = torch.nn.utils.clip_grad_norm_([p for p in self.policy.parameters() if p.requires_grad], o.grad_clip)
                sums["grad_norm"] = sums.get("grad_norm", 0.0) + float(gn)
                counts["grad_norm"] = counts.get("grad_norm", 0) + 1
                self.opt.step()
                self.opt.zero_grad(set_to_none=True)
                if self.critic is not None:
                    torch.nn.utils.clip_grad_norm_(self.critic.parameters(), o.grad_clip)
                    self.critic_opt.step()
                    self.critic_opt.zero_grad(set_to_none=True)
        self.policy.eval()
        n_mini = o.ppo_epochs * -(-B // o.mini_batch_size)
        # Micro-batch stats were weighted to sum to the mini-batch value; average those over mini-batches.
        out = {k: v / n_mini for k, v in sums.items() if k != "grad_norm"}
        out["grad_norm"] = sums.get("grad_norm", 0.0) / max(counts.get("grad_norm", 1), 1)
        out["lr"] = self.sched.get_last_lr()[0]  # the lr this step trained with (schedulers step in `step`)
        return out

    # --- evaluation on the fixed dev batch ----------------------------------------------------------------

    def evaluate(self) -> dict[str, float]:
        """The dev batch on the (real or answer-blind) dev engine: see zerosearch.evaluation.dev_eval."""
        if self.eval_engine is None:
            return {}
        return evaluate_dev(self.dev_data, self.backend, self.tok, self.eval_engine, self.rollout_cfg)

    # --- the loop -----------------------------------------------------------------------------------------

    def fit(self) -> dict[str, Any]:
        cfg = self.cfg.train
        self.run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.run_dir / "config.yaml", self.config_yaml)
        last: dict[str, Any] = {}
        if self.start_step == 0 and cfg.eval_every:
            last = self.evaluate()
            self.logger.log(0, {**last, "noise_prob": self.schedule(0)})
        with _progress(self.show_progress, cfg.steps, self.start_step) as bar:
            for step in range(self.start_step + 1, cfg.steps + 1):
                try:
                    metrics = self.step(step)
                except TrainingHalted as e:
                    self._halt(step, {"skipped": 1, "skipped_total": self.failures.skipped}, str(e))
                alarms = self.monitor.update(metrics)
                metrics.update({f"alarm/{a}": 1 for a in alarms})
                if cfg.eval_every and (step % cfg.eval_every == 0 or step == cfg.steps):
                    metrics.update(self.evaluate())
                if self.monitor.should_stop():
                    self._halt(step, metrics, f"collapse alarm ({', '.join(alarms)}) for "
                                              f"{self.monitor.streak} steps in a row")
                self.logger.log(step, metrics)
                last = metrics
                # A skipped step, or one under alarm when alarms can stop the run, is no "good" checkpoint.
                bad = metrics.get("skipped") or (alarms and self.cfg.monitor.stop_on_collapse)
                if (cfg.save_every and step % cfg.save_every == 0 and not bad) or step == cfg.steps:
                    self.save(step)
                bar(step, metrics, alarms)
        self.logger.close()
        self.export(self.run_dir / "final")
        plot_run(self.run_dir / "metrics.jsonl", self.run_dir / "metrics.png")
        return last

    def _halt(self, step: int, metrics: dict[str, Any], why: str) -> None:
        """Log the step that stopped the run, keep every checkpoint as it is, and raise TrainingHalted."""
        self.logger.log(step, {**metrics, "halted": 1})
        self.logger.close()
        kept = self.last_saved or (list_checkpoints(self.run_dir) or [None])[-1]
        raise TrainingHalted(f"stopped at step {step}: {why}; last good checkpoint: "
                             f"{kept if kept is not None else 'none (nothing was saved before)'}")

    def save(self, step: int) -> Path:
        state = {"optimizer": self.opt.state_dict(), "scheduler": self.sched.state_dict(), "rng": rng_state(),
                 "curriculum": self.schedule.state_dict()}
        if self.critic is not None:
            state.update(critic_optimizer=self.critic_opt.state_dict(), critic_scheduler=self.critic_sched.state_dict())
        if hasattr(self.engine, "state_dict"):
            state["engine"] = self.engine.state_dict()
        state.update(failures=self.failures.state_dict(), monitor=self.monitor.state_dict())
        self.last_saved = save_checkpoint(self.run_dir, step, policy=self.policy, critic=self.critic,
                                          trainer_state=state, config_yaml=self.config_yaml,
                                          keep=self.cfg.train.keep_checkpoints)
        return self.last_saved

    def _resume(self) -> None:
        ckpts = list_checkpoints(self.run_dir)
        if not ckpts:
            raise ValueError(f"--resume: no checkpoint under {self.run_dir / 'checkpoints'}")
        saved = (ckpts[-1] / "config.yaml").read_text(encoding="utf-8")
        if saved != self.config_yaml:
            raise ValueError(f"--resume: {ckpts[-1]} was saved under a different config; resume with the same "
                             f"config (see {ckpts[-1] / 'config.yaml'})")
        state = load_checkpoint(ckpts[-1], policy=self.policy, critic=self.critic)
        self.opt.load_state_dict(state["optimizer"])
        self.sched.load_state_dict(state["scheduler"])
        if self.critic is not None:
            self.critic_opt.load_state_dict(state["critic_optimizer"])
            self.critic_sched.load_state_dict(state["critic_scheduler"])
        self.schedule.load_state_dict(state["curriculum"])
        if "engine" in state and hasattr(self.engine, "load_state_dict"):
            self.engine.load_state_dict(state["engine"])
        if "failures" in state:
            self.failures.load_state_dict(state["failures"])
            self.monitor.load_state_dict(state["monitor"])
        set_rng_state(state["rng"])
        self.start_step = int(state["step"])
        self.last_saved = ckpts[-1]

    def export(self, out: Path) -> Path:
        """The trained policy as a checkpoint `zerosearch.models.load(out)` reads (LoRA: merged in)."""
        from zerosearch.io import atomic_path

        model = self.policy.merge_and_unload() if self.cfg.model.lora_r > 0 else self.policy
        with atomic_path(out, is_dir=True) as tmp:
            model.save_pretrained(tmp)
            self.tok.save_pretrained(tmp)
        return out

    def close(self) -> None:
        self.engine.close()
        if self._owned_eval_engine is not None:
            self._owned_eval_engine.close()


def _rows(batch: dict[str, Tensor], idx: Any) -> dict[str, Tensor]:
    return {k: v[idx] for k, v in batch.items()}


def _trim(batch: dict[str, Tensor], rb: RolloutBatch) -> tuple[dict[str, Tensor], RolloutBatch]:
    """Drop the columns that are padding for every row of a micro-batch (less compute, same result)."""
    out, r = trim_columns(batch)
    cut = {f.name: getattr(rb, f.name)[:, :r] for f in dataclasses.fields(rb)
           if isinstance(getattr(rb, f.name), Tensor) and getattr(rb, f.name).dim() == 2}
    return out, dataclasses.replace(rb, **cut)


def warmup(ratio: float, steps: int) -> Any:
    """The lr factor of training step s + 1 (LambdaLR's s counts scheduler steps, one per training step):
    linear over int(ratio * steps) steps (veRL's count), then 1. The first step trains at 1/W, not at
    veRL's 0 (an update that cannot move the weights)."""
    w = int(ratio * steps)
    return lambda s: min(1.0, (s + 1) / w) if w > 0 else 1.0


def _mean(xs: Any) -> float:
    xs = list(xs)
    return sum(xs) / len(xs) if xs else 0.0


def _sample(t: Any, tok: Any = None, mask: Tensor | None = None, advantage: float | None = None) -> dict[str, Any]:
    """One trajectory for samples.jsonl, with every search's documents and their leak-guard flags
    (`meta.leak`, `meta.leak_reason`, `meta.leak_replaced`, `meta.fallback`) as the engine returned them;
    for a step trained on, also the loss mask the update used (`loss_mask`: text runs, see
    zerosearch.training.mask_runs) and the trajectory's advantage (mean over its trained tokens)."""
    row = {"question": t.question, "golden_answers": t.golden_answers, "response": t.response,
           "answer": t.answer, "reward": t.reward, "turns": t.turns, "searches": t.searches,
           "queries": t.queries, "draws": t.draws, "end": t.end, "group": t.group_id,
           "documents": [[d.to_dict() for d in docs] for docs in t.documents]}
    if tok is not None and mask is not None:
        row["loss_mask"] = loss_mask_runs(t.response_ids, [int(m) for m in mask.tolist()],
                                          lambda ids: tok.decode(ids, skip_special_tokens=False))
    if advantage is not None:
        row["advantage"] = advantage
    return row


@contextmanager
def _progress(enabled: bool, total: int, start: int):
    """A rich progress bar with the step's reward and ETA; a no-op callback when disabled."""
    if not enabled:
        yield lambda step, metrics, alarms=(): None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    with Progress(TextColumn("[bold]train"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[info]}"),
                  TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn()) as prog:
        task = prog.add_task("train", total=total, completed=start, info="")

        def update(step: int, m: dict[str, Any], alarms: Any = ()) -> None:
            info = f"reward {m.get('reward', 0):.3f}  p_noise {m.get('noise_prob', 0):.2f}"
            if "dev/reward" in m:
                info += f"  dev {m['dev/reward']:.3f}"
            if note := counter_note(m):
                info += f"  [yellow]{note}[/]"
            if m.get("skipped"):
                info += f"  [red]SKIPPED ({m.get('skip_reason', '')})[/]"
            if alarms:
                info += f"  [red]ALARM {','.join(alarms)}[/]"
            prog.update(task, completed=step, info=info)

        yield update


def train(cfg: TrainConfig, run_dir: str | Path, *, resume: bool = False, progress: bool = True) -> dict[str, Any]:
    trainer = Trainer(cfg, run_dir, resume=resume, progress=progress)
    try:
        return trainer.fit()
    finally:
        trainer.close()
