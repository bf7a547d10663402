"""zerosearch's search-agent rollout as a veRL agent loop (`zerosearch_agent`).

ONE protocol: the loop does not re-implement the tag protocol. Each veRL trajectory runs
`zerosearch.agent.rollout.rollout` for its single row in a worker thread, with a `GenerationBackend` whose
`generate()` submits veRL's async `server_manager.generate` to the agent loop's event loop
(`asyncio.run_coroutine_threadsafe`) and waits. So the stop strings, the parser, the corrective message,
the forced answer, the length limits, the engine call with the row's own question and gold answers,
the information mask and the reward are exactly those of zerosearch's own trainer.

veRL mapping:
- `prompt_ids`: zerosearch's search-agent prompt for the row's question (chat template for instruct
  tokenizers, raw text for base ones: `zerosearch.agent.rollout.encode_prompt`), not the dataset's `prompt`.
- `response_ids` / `response_mask` / `response_logprobs`: the trajectory's ids, its info mask (0 on
  every inserted token), the sampler's log-probs (0.0 on inserted tokens; None unless
  `rollout.calculate_log_probs=True`).
- The response never exceeds `rollout.response_length`: the row's budget is prompt + response_length.
- `num_turns`: every message of the trajectory, as veRL counts them: the prompt, each generation, each
  information block, each corrective message and the forced-answer text.

The curriculum step. veRL never hands the training step to an agent loop's constructor; it reaches
the agent-loop worker with the batch. In the default trainer of veRL 0.9.1 (`trainer.use_v1=true`) the
batch's `global_steps` column arrives as a per-sample keyword of `run()`. The legacy trainer
(`use_v1=false`) keeps it in `batch.meta_info["global_steps"]`, which reaches the worker's
`_run_agent_loop` as `trajectory["step"]` only: set
`actor_rollout_ref.rollout.agent.agent_loop_manager_class=zerosearch.integrations.verl.agent_loop.ZeroSearchAgentLoopManager`
and its worker forwards the step. Without a step the loop refuses to run a curriculum (a silent p_start
would train a different method). p(i) is zerosearch's `Curriculum` with m = `curriculum.total_steps`
or veRL's `trainer.total_training_steps`; veRL counts steps from 1 as zerosearch's trainer does.
"""

from __future__ import annotations

# Before veRL's import pulls transformers' model code: a clear ImportError for transformers < 5.13 with kernels >= 0.15.
from zerosearch.integrations.compat import check_hub_kernels

check_hub_kernels()

import asyncio
import concurrent.futures
import threading
import time
from collections.abc import Sequence
from typing import Any, Literal
from uuid import uuid4

from pydantic import BaseModel, ConfigDict, Field

from zerosearch.training.config import CurriculumSection
from zerosearch.training.curriculum import FixedSchedule, NoiseSchedule
from zerosearch.data.qa import QARecord
from zerosearch.engines import SearchEngine
from zerosearch.agent.generation import GenOutput, StopReason
from zerosearch.integrations.common import noise_prob as common_noise_prob
from zerosearch.integrations.common import noise_schedule, policy_text, rollout_metrics
from zerosearch.integrations.verl.engine import shared_engine
from zerosearch.agent.rollout import Rollout, RolloutConfig, Trajectory, encode_prompt, rollout

from verl.experimental.agent_loop.agent_loop import (  # noqa: E402  (the optional dependency)
    AgentLoopBase,
    AgentLoopManager,
    AgentLoopMetrics,
    AgentLoopOutput,
    AgentLoopWorker,
    register,
)

AGENT_NAME = "zerosearch_agent"
# What veRL's AgentLoopWorker passes every agent loop (besides `tools`); any other key is a setting.
_VERL_KWARGS = {"trainer_config", "server_manager", "tokenizer", "processor", "dataset_cls", "data_config",
                "hf_model_type"}
POLICY_TEXT_KEY = "zerosearch_policy_text"  # extra_fields key the reward function reads


# --- settings (the agent-loop YAML's keys besides name/_target_) ------------------------------------


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class AgentRolloutSection(_Section):
    """zerosearch.agent.rollout.RolloutConfig fields that veRL does not own. Temperature and top-p come from
    veRL's rollout config (its trainer recomputes log-probs with them); n is veRL's `rollout.n`; the
    prompt/response budgets are `rollout.prompt_length` / `rollout.response_length`."""

    max_turns: int = Field(4, ge=1)
    max_new_tokens_per_turn: int = Field(500, ge=1)
    max_obs_tokens: int = Field(2048, ge=32)
    k: int = Field(5, ge=1)
    prompt_overflow: Literal["error", "truncate_left"] = "error"
    format_weight: float = 0.0


class AgentCurriculumSection(CurriculumSection):
    total_steps: int | None = Field(None, ge=1)  # None: veRL's trainer.total_training_steps


class AgentSettings(_Section):
    engine: dict[str, Any] = {"name": "simulated"}  # zerosearch.engines.EngineConfig fields
    rollout: AgentRolloutSection = AgentRolloutSection()
    curriculum: AgentCurriculumSection = AgentCurriculumSection()
    max_threads: int = Field(512, ge=1)  # concurrent trajectories per agent-loop worker process
    engine_batch_window_s: float = Field(0.02, ge=0)  # concurrent rows' queries merged into one search
    engine_max_batch: int = Field(256, ge=1)
    generate_timeout_s: float = Field(1800.0, gt=0)


def _plain(x: Any) -> Any:
    """OmegaConf containers (what hydra hands the constructor) as plain Python."""
    try:
        from omegaconf import DictConfig, ListConfig, OmegaConf

        if isinstance(x, (DictConfig, ListConfig)):
            return OmegaConf.to_container(x, resolve=True)
    except ImportError:  # pragma: no cover - omegaconf ships with veRL
        pass
    return x


def build_schedule(c: AgentCurriculumSection, trainer_total_steps: int | None) -> NoiseSchedule:
    if c.fixed is not None:
        return noise_schedule(1, fixed=c.fixed)
    total = c.total_steps or trainer_total_steps
    if not total or total < 1:
        raise ValueError("zerosearch_agent: the curriculum needs curriculum.total_steps in the agent-loop "
                         "config or trainer.total_training_steps in veRL's config (got neither)")
    return noise_schedule(int(total), p_start=c.p_start, p_end=c.p_end, base=c.base)


def step_noise_prob(schedule: NoiseSchedule, global_steps: int) -> float:
    """veRL's `global_steps` is 1 at the first update (as zerosearch's trainer numbers them), 0 for the
    validation that runs before training: p(global_steps), p_start at 0."""
    return schedule(0) if global_steps <= 0 else common_noise_prob(schedule, global_steps - 1)


_POOLS: dict[int, concurrent.futures.ThreadPoolExecutor] = {}
_POOLS_LOCK = threading.Lock()
_TOKENIZERS: dict[int, Any] = {}


def _private_tokenizer(tok: Any) -> Any:
    """A per-process copy of veRL's tokenizer for the rollout threads: veRL's worker changes the shared
    one's padding settings on the event loop (`tokenizer.pad`) while the threads encode, and a fast
    tokenizer mutated while another thread uses it raises "Already borrowed"."""
    import copy

    with _POOLS_LOCK:
        if id(tok) not in _TOKENIZERS:
            _TOKENIZERS[id(tok)] = copy.deepcopy(tok)
        return _TOKENIZERS[id(tok)]


def _pool(n: int) -> concurrent.futures.ThreadPoolExecutor:
    # The rollout threads mostly wait on the event loop or the engine; the default executor's
    # min(32, cpus + 4) threads would cap concurrent trajectories per worker.
    with _POOLS_LOCK:
        if n not in _POOLS:
            _POOLS[n] = concurrent.futures.ThreadPoolExecutor(max_workers=n, thread_name_prefix="zerosearch-rollout")
        return _POOLS[n]


# --- the generation backend over veRL's rollout servers -------------------------------------------


def stop_params(rollout_name: str, stop_strings: Sequence[str]) -> dict[str, Any]:
    """Stop strings in the server's own sampling-parameter names, the stop string kept in the output
    (the rollout parses the closing tag). veRL passes the dict straight to vLLM's `SamplingParams` or to
    SGLang's sampling params, whose names differ."""
    stops = {"stop": list(stop_strings)}
    if rollout_name == "vllm":
        return {**stops, "include_stop_str_in_output": True}
    if rollout_name == "sglang":
        return {**stops, "no_stop_trim": True}
    raise ValueError(f"zerosearch_agent supports the vllm and sglang rollouts, not {rollout_name!r}")


class VerlServerBackend:
    """zerosearch's `GenerationBackend` over veRL's `server_manager.generate`, called from a worker
    thread: each prompt is submitted to the agent loop's event loop and awaited there.

    The seed argument is ignored on purpose: the n samples of a question run as n agent loops with the
    same prompt, and one seed would make them identical; veRL sets a seed itself under
    `rollout.full_determinism`. veRL's `stop_reason` says only completed/aborted, so the reason is read
    from the ids: a stop string in the text, else an eos token at the end, else the length cap.
    """

    def __init__(self, server_manager: Any, loop: asyncio.AbstractEventLoop, tokenizer: Any,
                 sampling_params: dict[str, Any], rollout_name: str, *, eos_ids: Sequence[int],
                 request_id: str | None = None, priority: int = 0, timeout_s: float = 1800.0):
        self.server_manager, self.loop, self.tokenizer = server_manager, loop, tokenizer
        self.sampling_params = dict(sampling_params)
        self.rollout_name, self.eos_ids = rollout_name, set(eos_ids)
        self.request_id = request_id or uuid4().hex  # one id per trajectory: sticky server, prefix cache
        self.priority, self.timeout_s = priority, timeout_s
        self.gen_seconds = 0.0
        self.num_preempted = -1

    def generate(self, prompts_token_ids: list[list[int]], max_new_tokens: int, stop_strings: Sequence[str],
                 temperature: float, top_p: float, seed: int) -> list[GenOutput]:
        outs = []
        for prompt in prompts_token_ids:
            params = {**self.sampling_params, "temperature": temperature, "top_p": top_p,
                      "max_tokens": max_new_tokens, **stop_params(self.rollout_name, stop_strings)}
            coro = self.server_manager.generate(request_id=self.request_id, prompt_ids=list(prompt),
                                                sampling_params=params, priority=self.priority)
            t0 = time.perf_counter()
            out = asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=self.timeout_s)
            self.gen_seconds += time.perf_counter() - t0
            if out.num_preempted is not None:
                self.num_preempted = max(self.num_preempted, 0) + out.num_preempted
            ids = list(out.token_ids)
            text = self.tokenizer.decode(ids, skip_special_tokens=False)
            reason: StopReason = ("stop" if any(s in text for s in stop_strings)
                                  else "eos" if ids and ids[-1] in self.eos_ids else "length")
            logprobs = list(out.log_probs) if out.log_probs else None
            outs.append(GenOutput(ids, text, reason, logprobs))
        return outs


def eos_token_ids(tokenizer: Any, generation_config: Any = None) -> list[int]:
    eos = getattr(generation_config, "eos_token_id", None) if generation_config is not None else None
    eos = [] if eos is None else [eos] if isinstance(eos, int) else list(eos)
    return sorted(set(eos) | {tokenizer.eos_token_id} - {None})


# --- the row ---------------------------------------------------------------------------------------


def _as_list(x: Any) -> list[str]:
    if x is None:
        return []
    if isinstance(x, str):
        return [x]
    return [str(a) for a in list(x)]


def record_from_kwargs(kwargs: dict[str, Any]) -> QARecord:
    """The QA row behind one veRL sample: `extra_info` as `zerosearch export --format verl` writes it
    (id, question, golden_answers); gold answers fall back to `reward_model.ground_truth.target`
    (Search-R1's parquet), the id to `extra_info.index`."""
    extra = _plain(kwargs.get("extra_info")) or {}
    question = extra.get("question")
    if not isinstance(question, str) or not question.strip():
        raise ValueError("zerosearch_agent: the row has no extra_info.question (export the data with "
                         "`zerosearch export --format verl`, or add the question to extra_info)")
    golds = _as_list(extra.get("golden_answers"))
    if not golds:
        gt = (_plain(kwargs.get("reward_model")) or {}).get("ground_truth")
        golds = _as_list(gt.get("target") if isinstance(gt, dict) else gt)
    if not golds:
        raise ValueError(f"zerosearch_agent: row {question[:60]!r} has no gold answers (extra_info.golden_answers "
                         "or reward_model.ground_truth.target)")
    row_id = extra.get("id", extra.get("index"))
    return QARecord(id=str(row_id if row_id is not None else question), question=question, golden_answers=golds,
                    data_source=str(kwargs.get("data_source", "verl")))


def count_turns(t: Trajectory, max_turns: int) -> int:
    """Messages in the trajectory: prompt + generations + information blocks + corrective messages +
    the forced-answer text. An action at the final turn, or an EOS (zerosearch.agent.rollout ends the row there),
    is counted invalid but gets no message; `no_answer` only happens at the final turn."""
    forced = t.turns > max_turns
    corrective = t.invalid_actions - int(t.end in ("no_answer", "eos"))
    return 1 + t.turns + t.searches + corrective + int(forced)


def trajectory_fields(ro: Rollout, text: str, noise_prob: float | None, step: int | None) -> dict[str, Any]:
    """What veRL keeps per sample (`extra_fields`; the reward function gets them in `extra_info`): the
    policy's own text and zerosearch's rollout metrics for this trajectory (the names TRL's logs use)."""
    return {POLICY_TEXT_KEY: text, **rollout_metrics(ro, noise_prob=noise_prob),
            "zerosearch/step": -1 if step is None else step, "turn_scores": [], "tool_rewards": []}


# --- the agent loop ---------------------------------------------------------------------------------


@register(AGENT_NAME)
class ZeroSearchAgentLoop(AgentLoopBase):
    """Settings come from the agent-loop YAML (`actor_rollout_ref.rollout.agent.agent_loop_config_path`),
    whose extra keys hydra passes to this constructor: `engine`, `rollout`, `curriculum`, ... (see
    `AgentSettings`). Registered by the decorator too, with the defaults."""

    def __init__(self, *args: Any, tools: Any = None, name: str | None = None, **kwargs: Any):
        unknown = sorted(set(kwargs) - _VERL_KWARGS - set(AgentSettings.model_fields))
        if unknown:  # hydra passes the YAML's keys here: a misspelt one must not be silently ignored
            raise ValueError(f"zerosearch_agent: unknown setting(s) {', '.join(unknown)} in the agent-loop config; "
                             f"known: {', '.join(AgentSettings.model_fields)}")
        mine = {k: _plain(kwargs.pop(k)) for k in list(kwargs) if k in AgentSettings.model_fields}
        super().__init__(*args, **kwargs)
        self.settings = AgentSettings.model_validate(mine)
        trainer_total = self.config.get("trainer", {}).get("total_training_steps")
        self.schedule = build_schedule(self.settings.curriculum, trainer_total)
        self.prompt_length = int(self.rollout_config.prompt_length)
        self.response_length = int(self.rollout_config.response_length)
        self.rollout_name = str(self.rollout_config.name)
        stop_params(self.rollout_name, ())  # refuse an unsupported rollout up front
        self.rollout_tokenizer = _private_tokenizer(self.tokenizer)

    def noise_prob(self, global_steps: Any) -> float:
        if isinstance(self.schedule, FixedSchedule):
            return self.schedule(0)
        if global_steps is None:
            raise RuntimeError(
                "zerosearch_agent: no training step reached the agent loop. With trainer.use_v1=false set "
                "actor_rollout_ref.rollout.agent.agent_loop_manager_class="
                "zerosearch.integrations.verl.agent_loop.ZeroSearchAgentLoopManager (or use a fixed "
                "curriculum.fixed noise probability)")
        return step_noise_prob(self.schedule, int(global_steps))

    def rollout_config_for(self, prompt_tokens: int) -> RolloutConfig:
        r = self.settings.rollout
        return RolloutConfig(max_turns=r.max_turns, max_new_tokens_per_turn=r.max_new_tokens_per_turn,
                             max_obs_tokens=r.max_obs_tokens, k=r.k, prompt_overflow=r.prompt_overflow,
                             format_weight=r.format_weight, n=1, max_prompt_tokens=prompt_tokens,
                             max_total_tokens=prompt_tokens + self.response_length)

    def run_row(self, record: QARecord, backend: VerlServerBackend, engine: SearchEngine,
                noise_prob: float | None, sampling_params: dict[str, Any]) -> tuple[Rollout, RolloutConfig]:
        """zerosearch's rollout for one row (runs in a worker thread)."""
        probe = RolloutConfig(max_prompt_tokens=self.prompt_length,
                              max_total_tokens=self.prompt_length + self.response_length,
                              prompt_overflow=self.settings.rollout.prompt_overflow)
        prompt, _ = encode_prompt(record.question, self.rollout_tokenizer, probe)
        cfg = self.rollout_config_for(len(prompt))
        cfg.temperature = float(sampling_params.get("temperature", 1.0))
        cfg.top_p = float(sampling_params.get("top_p", 1.0))
        return rollout([record], backend, self.rollout_tokenizer, engine, cfg, noise_prob=noise_prob), cfg

    async def run(self, sampling_params: dict[str, Any], **kwargs: Any) -> AgentLoopOutput:
        record = record_from_kwargs(kwargs)
        step = kwargs.get("global_steps")
        step = None if step is None else int(_plain(step))
        noise_prob = self.noise_prob(step)
        params = {k: v for k, v in sampling_params.items() if k not in ("temperature", "top_p")}
        backend = VerlServerBackend(self.server_manager, self.loop, self.rollout_tokenizer, params, self.rollout_name,
                                    eos_ids=eos_token_ids(self.tokenizer), priority=int(kwargs.get("priority", 0)),
                                    timeout_s=self.settings.generate_timeout_s)
        engine = shared_engine(self.settings.engine, window_s=self.settings.engine_batch_window_s,
                               max_batch=self.settings.engine_max_batch)
        t0 = time.perf_counter()
        ro, cfg = await self.loop.run_in_executor(_pool(self.settings.max_threads), self.run_row, record, backend,
                                                     engine, noise_prob, sampling_params)
        total = time.perf_counter() - t0
        return to_output(ro, cfg, self.rollout_tokenizer, noise_prob, step, gen_seconds=backend.gen_seconds,
                         other_seconds=max(total - backend.gen_seconds, 0.0), num_preempted=backend.num_preempted)


def to_output(ro: Rollout, cfg: RolloutConfig, tokenizer: Any, noise_prob: float | None, step: int | None, *,
              gen_seconds: float, other_seconds: float, num_preempted: int = -1) -> AgentLoopOutput:
    (t,) = ro
    fields = trajectory_fields(ro, policy_text(t.response_ids, t.info_mask, tokenizer), noise_prob, step)
    return AgentLoopOutput(
        prompt_ids=list(t.prompt_ids), response_ids=list(t.response_ids), response_mask=list(t.info_mask),
        # [] for an empty response, not None: veRL stacks the log-probs only if every row has them
        response_logprobs=None if t.sampler_logprobs is None else list(t.sampler_logprobs),
        num_turns=count_turns(t, cfg.max_turns),
        metrics=AgentLoopMetrics(generate_sequences=gen_seconds, tool_calls=other_seconds, num_preempted=num_preempted),
        extra_fields=fields)


# --- the step for veRL's legacy trainer -------------------------------------------------------------


class ZeroSearchAgentLoopWorker(AgentLoopWorker):
    """Forwards the batch's `global_steps` (legacy trainer: meta info -> `trajectory["step"]`) to the
    agent loop as the `global_steps` keyword, as veRL's v1 trainer does by itself."""

    async def _run_agent_loop(self, sampling_params: dict[str, Any], trajectory: dict[str, Any], *,
                              agent_name: str, trace: bool = True, **kwargs: Any):
        if kwargs.get("global_steps") is None and trajectory.get("step", -1) not in (None, -1):
            kwargs["global_steps"] = trajectory["step"]
        return await super()._run_agent_loop(sampling_params, trajectory, agent_name=agent_name, trace=trace,
                                             **kwargs)


class ZeroSearchAgentLoopManager(AgentLoopManager):
    """`actor_rollout_ref.rollout.agent.agent_loop_manager_class` for the legacy trainer."""

    def __init__(self, *args: Any, **kwargs: Any):
        import ray

        self.agent_loop_workers_class = ray.remote(ZeroSearchAgentLoopWorker)
        super().__init__(*args, **kwargs)
