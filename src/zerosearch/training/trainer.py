"""The RL trainer: rollout against a (simulated) engine, score, update, repeat.

One step, top to bottom (`Trainer.step`), each stage its own unit:
  1. p = curriculum(step)                      noise probability sent with every search query
  2. rollout(batch of questions x n samples)   multi-turn: <search> -> engine -> <information> -> ...;
                                               the reward (answer F1) is scored as each trajectory ends
  3. score (training.scoring)                  loss mask, old / ref log-probs, critic values: no-grad passes
  4. advantages                                algorithms.<name>.compute_advantages (pure functions)
  5. update (training.update)                  ppo_epochs x mini-batches, gradient accumulation over
                                               micro-batches, under the loss mask of step 3
  6. record (training.report)                  metrics.jsonl / TensorBoard / samples.jsonl; then, in `fit`,
                                               the dev-batch eval and an atomic checkpoint (training.state)

This module is the loop and the wiring: which models, optimizers and engines a run has, and in which
order they are built (the seeded global RNG is drawn by the LoRA and value-head inits, so the order is
part of the result).

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
from zerosearch.agent.generation import HFBackend
from zerosearch.agent.precision import autocast
from zerosearch.agent.precision import check as check_precision
from zerosearch.agent.prefix_cache import budget_tokens
from zerosearch.agent.rollout import Rollout, RolloutConfig, collate, rollout
from zerosearch.algorithms.batch import RolloutBatch
from zerosearch.data.qa import QARecord, load_qa
from zerosearch.engines import EngineConfig, SearchEngine, SearchError, SearchRequest, build_engine
from zerosearch.engines.self_search import bind_policy
from zerosearch.evaluation.dev_eval import dev_engine, dev_engine_config
from zerosearch.evaluation.dev_eval import evaluate as evaluate_dev
from zerosearch.io import atomic_write_text
from zerosearch.models import load
from zerosearch.training import state as run_state
from zerosearch.training.checkpoint import list_checkpoints
from zerosearch.training.config import RolloutSection, TrainConfig, dump_config
from zerosearch.training.curriculum import Curriculum, FixedSchedule, NoiseSchedule
from zerosearch.training.metrics import MetricsLogger, plot_run
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
from zerosearch.training.report import sample_row as _sample  # the name the viewer's tests and docs use
from zerosearch.training.report import skip_metrics, step_metrics, trained_samples
from zerosearch.training.scoring import nonfinite_logprobs, reference_model, sampling_temperature, score_rollout
from zerosearch.training.update import MiniBatchUpdate, ValueModel

__all__ = ["Trainer", "ValueModel", "engine_config", "resolve_data", "train", "warmup"]


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
    """One RL run from a TrainConfig: `fit` runs `step` per training step, logs, evaluates and checkpoints."""

    def __init__(self, cfg: TrainConfig, run_dir: str | Path, *, resume: bool = False, progress: bool = True,
                 engine: SearchEngine | None = None, eval_engine: SearchEngine | None = None):
        """`engine` / `eval_engine` replace the configured ones (tests pass fakes; a gold-seeing
        `eval_engine` is refused like a configured one)."""
        self.cfg, self.run_dir, self.show_progress = cfg, Path(run_dir), progress
        self.config_yaml = dump_config(cfg)
        refuse_to_start(cfg, self.run_dir, resume)
        random.seed(cfg.train.seed)
        torch.manual_seed(cfg.train.seed)
        self.train_data, self.dev_data, world_dir = resolve_data(cfg)
        self.algo = algorithms.get(**{"name": "grpo", **cfg.algorithm})
        self.policy, self.tok, self.ref, self.critic = build_models(cfg, self.algo)
        self.device = next(self.policy.parameters()).device
        check_precision(cfg.optim.precision, self.device)
        self.opt, self.sched, self.critic_opt, self.critic_sched = build_optimizers(cfg, self.policy, self.critic)
        c = cfg.curriculum
        self.schedule: NoiseSchedule = FixedSchedule(c.fixed) if c.fixed is not None else \
            Curriculum(c.p_start, c.p_end, cfg.train.steps, c.base)
        self.engine = engine or build_engine(engine_config(cfg.engine, world_dir))
        self.eval_engine, self._owned_eval_engine = None, None
        if self.dev_data and cfg.train.eval_every:
            dev_cfg = dev_engine_config(cfg.engine, cfg.eval_engine, cfg.data.dev, self.engine.is_simulator)
            self.eval_engine, self._owned_eval_engine = dev_engine(self.engine, dev_cfg, world_dir, eval_engine)
        self.rollout_cfg = rollout_config(cfg.rollout, self.engine_k())
        self.backend = policy_backend(cfg, self.policy, self.tok)
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
        probe_engines(self.train_data[0], self.engine_k(), self.engine, self.eval_engine)

    def batch_records(self, step: int) -> list[QARecord]:
        """Questions of step `step`: epochs of a seeded shuffle, so any step's batch is known in advance."""
        return step_records(self.train_data, step, self.cfg.train.batch_size, self.cfg.train.seed)

    # --- one step ---------------------------------------------------------------------------------------

    def step(self, step: int) -> dict[str, Any]:
        t0 = time.perf_counter()
        p = self.schedule(step)  # 1. the noise probability of this step's searches
        try:  # 2. rollout (the reward is scored as each trajectory ends)
            ro = rollout(self.batch_records(step), self.backend, self.tok, self.engine, self.rollout_cfg,
                         noise_prob=p, seed=self._seed(step))
        except (SearchError, OSError) as e:  # the engine gave up mid-rollout: nothing to train on
            why = f"the engine failed: {type(e).__name__}: {e}"
            self.failures.record(True, why)
            return self._skip(step, p, why, failed=1, searches=1)
        t_rollout = time.perf_counter() - t0
        failed, searches = search_failures([t.documents for t in ro])
        if self.failures.skip(failed, searches):
            return self._skip(step, p, f"{failed} of {searches} searches failed", failed, searches, ro)
        batch = collate(ro, self.tok.pad_token_id)
        rb = self._rollout_batch(ro, batch)  # 3. loss mask, old / ref log-probs, values
        nonfinite = nonfinite_logprobs(rb)
        if self.failures.record(nonfinite > 0, f"{nonfinite} log-probs were not finite"):
            return self._skip(step, p, f"{nonfinite} non-finite log-probs", failed, searches, ro, nonfinite=nonfinite)
        adv, returns = self.algo.compute_advantages(rb)  # 4. advantages
        rb = dataclasses.replace(rb, advantages=adv, returns=returns)
        t1 = time.perf_counter()
        upd = self.update(batch, rb, step)  # 5. update
        self._step_schedulers()
        t_update = time.perf_counter() - t1
        # 6. record: the metrics row (`fit` logs it, evaluates, checkpoints) and the sample rows
        metrics = step_metrics(ro, rb, noise_prob=p, failed=failed, skipped_total=self.failures.skipped, update=upd,
                               t_rollout=t_rollout, t_update=t_update, t_step=time.perf_counter() - t0,
                               counters=self.counters.delta())
        self.logger.samples(step, trained_samples(ro, self.tok, rb, self.cfg.train.samples_per_step))
        return metrics

    def _seed(self, step: int) -> int:
        """Step `step`'s seed: its rollout's sampling and its update's mini-batch order."""
        return self.cfg.train.seed * 1_000_003 + step

    def _temperature(self) -> float:
        return sampling_temperature(self.rollout_cfg.temperature)

    def _amp(self) -> Any:
        """The context of every forward pass: bf16 autocast with optim.precision=bf16, else nothing."""
        return autocast(self.cfg.optim.precision, self.device)

    def _rollout_batch(self, ro: Rollout, batch: dict[str, Tensor]) -> RolloutBatch:
        """Step 3 (zerosearch.training.scoring); the reference model only for an algorithm with a KL term."""
        reference = (lambda: reference_model(self.policy, self.ref)) if self.algo.needs_ref else None
        return score_rollout(ro, batch, policy=self.policy, optim=self.cfg.optim, loss_mask=self.cfg.train.loss_mask,
                             temperature=self._temperature(), reference=reference, critic=self.critic, amp=self._amp)

    def update(self, batch: dict[str, Tensor], rb: RolloutBatch, step: int) -> dict[str, float]:
        """Step 5 (zerosearch.training.update), plus the lr it trained with (schedulers step in `step`)."""
        run = MiniBatchUpdate(self.policy, self.opt, self.algo, self.cfg.optim, temperature=self._temperature(),
                              critic=self.critic, critic_opt=self.critic_opt, amp=self._amp)
        return {**run(batch, rb, self._seed(step)), "lr": self.sched.get_last_lr()[0]}

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
        return skip_metrics(ro, noise_prob=p, why=why, failed=failed, searches=searches,
                            skipped_total=self.failures.skipped, nonfinite=nonfinite,
                            lr=self.sched.get_last_lr()[0], counters=self.counters.delta())

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

    # --- checkpoints (zerosearch.training.state) -----------------------------------------------------------

    def _run_state(self) -> run_state.RunState:
        return run_state.RunState(self.opt, self.sched, self.schedule, self.failures, self.monitor, self.engine,
                                  self.critic_opt, self.critic_sched)

    def save(self, step: int) -> Path:
        self.last_saved = run_state.save(self.run_dir, step, self._run_state(), policy=self.policy, critic=self.critic,
                                         config_yaml=self.config_yaml, keep=self.cfg.train.keep_checkpoints)
        return self.last_saved

    def _resume(self) -> None:
        self.start_step, self.last_saved = run_state.resume(self.run_dir, self._run_state(), policy=self.policy,
                                                            critic=self.critic, config_yaml=self.config_yaml)

    def export(self, out: Path) -> Path:
        """The trained policy as a checkpoint `zerosearch.models.load(out)` reads (LoRA: merged in)."""
        return run_state.export_policy(self.policy, self.tok, out, merge_lora=self.cfg.model.lora_r > 0)

    def close(self) -> None:
        self.engine.close()
        if self._owned_eval_engine is not None:
            self._owned_eval_engine.close()


def refuse_to_start(cfg: TrainConfig, run_dir: Path, resume: bool) -> None:
    """Before anything is loaded: the generation backend the trainer has, and never a clobbered run."""
    if cfg.rollout.backend != "hf":
        raise ValueError("the trainer generates with rollout.backend=hf; vLLM serves evaluation and the "
                         "simulator (weight sync into a vLLM engine during training is not implemented)")
    if (run_dir / "metrics.jsonl").exists() and not resume:
        raise ValueError(f"{run_dir} already holds a run; pass --resume to continue it or choose "
                         "another --out (nothing is overwritten)")


def build_models(cfg: TrainConfig, algo: Any) -> tuple[Any, Any, Any, ValueModel | None]:
    """(policy, tokenizer, reference, critic). The reference is a frozen copy of the initial policy when the
    algorithm has a KL term and there is no LoRA (with LoRA it is the base model: the adapter switched off,
    None here); the critic is PPO's only. Built in this order after the caller seeds the global RNG: the
    LoRA and value-head inits draw from it."""
    m = cfg.model
    policy, tok = load(m.name, dtype=m.dtype, device=m.device, seed=cfg.train.seed)
    device = next(policy.parameters()).device
    ref = None
    if m.lora_r > 0:
        from peft import LoraConfig, get_peft_model

        policy = get_peft_model(policy, LoraConfig(r=m.lora_r, lora_alpha=m.lora_alpha, lora_dropout=m.lora_dropout,
                                                   target_modules=list(m.lora_targets)))
    elif algo.needs_ref:
        ref = copy.deepcopy(policy).eval().requires_grad_(False)
    if m.gradient_checkpointing:
        policy.gradient_checkpointing_enable()
    critic = None
    if algo.uses_critic:
        critic = ValueModel(load(m.name, dtype=m.dtype, device=m.device, seed=cfg.train.seed)[0]).to(device)
    return policy, tok, ref, critic


def build_optimizers(cfg: TrainConfig, policy: Any, critic: ValueModel | None) -> tuple[Any, Any, Any, Any]:
    """AdamW and its warm-up schedule for the policy's trainable weights, and for the critic's (else None).
    The schedulers step once per *training* step (in `Trainer.step`), so warm-up is counted in training
    steps as in veRL, however many optimizer steps a training step makes."""
    o, steps = cfg.optim, cfg.train.steps
    opt = torch.optim.AdamW([p for p in policy.parameters() if p.requires_grad], lr=o.lr, betas=o.betas,
                            weight_decay=o.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, warmup(o.warmup_ratio, steps))
    if critic is None:
        return opt, sched, None, None
    critic_opt = torch.optim.AdamW(critic.parameters(), lr=o.critic_lr, betas=o.betas, weight_decay=o.weight_decay)
    return opt, sched, critic_opt, torch.optim.lr_scheduler.LambdaLR(critic_opt, warmup(o.critic_warmup_ratio, steps))


def step_records(data: list[QARecord], step: int, batch_size: int, seed: int) -> list[QARecord]:
    """Questions of step `step`: epochs of a seeded shuffle, so any step's batch is known in advance."""
    out = []
    for g in range(step * batch_size, (step + 1) * batch_size):
        epoch, pos = divmod(g, len(data))
        order = list(range(len(data)))
        random.Random(seed * 1_000_003 + epoch).shuffle(order)
        out.append(data[order[pos]])
    return out


def policy_backend(cfg: TrainConfig, policy: Any, tok: Any) -> HFBackend:
    """The policy's generation backend (its KV cache sized for one step's rollout when reused)."""
    r, o = cfg.rollout, cfg.optim
    kv_tokens = budget_tokens(cfg.train.batch_size * r.n, r.max_total_tokens) if o.reuse_kv_cache else 0
    return HFBackend(policy, tok, batch_size=r.batch_size, logprobs=o.reuse_sampler_logprobs,
                     kv_cache_tokens=kv_tokens, precision=o.precision)


def probe_engines(rec: QARecord, k: int, engine: SearchEngine, eval_engine: SearchEngine | None) -> None:
    """One real query to each engine, before step 1: the first training question, as useful (no RNG draw)."""
    request = SearchRequest(query=rec.question, k=k, row_id=rec.id, question=rec.question,
                            golden_answers=list(rec.golden_answers), mode="useful")
    check_engine(engine, request, "training")
    if eval_engine is not None:
        check_engine(eval_engine, request, "dev")


def rollout_config(r: RolloutSection, k: int) -> RolloutConfig:
    return RolloutConfig(max_turns=r.max_turns, max_new_tokens_per_turn=r.max_new_tokens_per_turn,
                         max_obs_tokens=r.max_obs_tokens, max_prompt_tokens=r.max_prompt_tokens,
                         max_total_tokens=r.max_total_tokens, k=k, n=r.n, temperature=r.temperature, top_p=r.top_p,
                         format_weight=r.format_weight)


def warmup(ratio: float, steps: int) -> Any:
    """The lr factor of training step s + 1 (LambdaLR's s counts scheduler steps, one per training step):
    linear over int(ratio * steps) steps (veRL's count), then 1. The first step trains at 1/W, not at
    veRL's 0 (an update that cannot move the weights)."""
    w = int(ratio * steps)
    return lambda s: min(1.0, (s + 1) / w) if w > 0 else 1.0


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
