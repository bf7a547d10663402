"""The multi-turn rollout of the search agent, and the tensors the trainer builds from it.

One call runs every (question, sample) row to the end:

1. Each record is repeated `n` times (GRPO groups); the prompt is the search-agent instruction.
2. Each turn, only the *active* rows go to the generation backend; a row that answered or ran out of
   room leaves the batch, and nothing is re-padded or re-tokenised: a row is its prompt ids plus the
   response ids it has accumulated, and the sampled ids are appended exactly as sampled.
3. The turn's text is parsed (first complete `<search>`/`<answer>` block): an answer ends the row; a
   non-empty query is searched; anything else is an invalid action and gets the corrective message.
   All queries of a turn go to the engine in ONE `engine.search` call, each carrying its own row's
   id, question and gold answers (the reference code could pair a query with another row's context),
   the curriculum's noise probability and k. Results come back as an `<information>` block.
4. After `max_turns` action turns (search or invalid), rows still open get FORCE_ANSWER and one last
   generation; whatever it is, the row ends there.
5. An end-of-sequence token ends the row (`end="eos"`, reward 0 unless that turn also answered): the
   policy said it was done, so nothing is appended after its EOS and no EOS ever sits mid-context
   (training and `zerosearch eval` share this loop, so both follow the same protocol). The EOS stays the
   row's last, trained token: stopping without an answer is an action the reward can discourage.

Masking: `info_mask` is 1 on tokens the policy sampled and 0 on everything the rollout inserted:
information blocks, the corrective message and the forced-answer text. The forced text is not the
policy's action, so it gets no gradient (like retrieved text); the answer generated after it does.

Length limits are enforced and counted per trajectory (`truncation`), never silently: a prompt over
`max_prompt_tokens` raises (or is left-truncated, `prompt_overflow="truncate_left"`); an information
block is cut to `max_obs_tokens` (the documents are cut, the tags kept); and `max_total_tokens` bounds
prompt + response: generation, observations and messages are cut at the budget, and a row with no room
left ends with `end="context"`.

The reward is the F1 of the answer the *policy* wrote: the answer is read from the policy's own turns,
so neither the instruction's example nor a retrieved document that happens to contain `<answer>` tags
can be scored. No answer -> reward 0.
"""

from __future__ import annotations

import re
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import torch
from torch import Tensor

from zerosearch.data.qa import QARecord
from zerosearch.engines.base import Document, SearchEngine, SearchRequest, format_documents
from zerosearch.agent.generation import STOP_STRINGS, GenerationBackend
from zerosearch.prompts import FORCE_ANSWER, INFORMATION, INVALID_ACTION, search_agent_prompt
from zerosearch.reward import answer_metrics, extract_answer, f1_reward

# Search-R1's action parser: the first complete block. Generation stops at the first closing tag, so a
# turn holds at most one. As in `reward.extract_answer`, a block's content never holds its own opening tag:
# "<search> a <search> b </search>" searches "b".
_ACTION = re.compile(r"<(search|answer)>((?:(?!<\1>).)*?)</\1>", re.DOTALL)
EndReason = Literal["answer", "no_answer", "context", "eos"]


@dataclass
class RolloutConfig:
    max_turns: int = 4  # action turns (search or invalid) before the forced answer turn
    max_new_tokens_per_turn: int = 500
    max_obs_tokens: int = 2048  # tokens of one information block, tags included
    max_prompt_tokens: int = 2048
    max_total_tokens: int = 4096  # prompt + response
    k: int = 5  # documents per search
    temperature: float = 1.0
    # 1.0 keeps the sampler's distribution equal to the softmax whose log-probs the trainer computes; the
    # public GRPO script uses 0.95.
    top_p: float = 1.0
    n: int = 1  # samples per question (GRPO group size)
    prompt_overflow: Literal["error", "truncate_left"] = "error"
    format_weight: float = 0.0  # Search-R1's format term in the reward (see zerosearch.reward.f1_reward)

    def __post_init__(self) -> None:
        if self.max_turns < 1 or self.max_new_tokens_per_turn < 1 or self.k < 1 or self.n < 1:
            raise ValueError("max_turns, max_new_tokens_per_turn, k and n must be >= 1")
        if self.max_obs_tokens < 32:
            raise ValueError(f"max_obs_tokens must leave room for the <information> tags (>= 32), got {self.max_obs_tokens}")
        if not 0 < self.max_prompt_tokens < self.max_total_tokens:
            raise ValueError(f"need 0 < max_prompt_tokens < max_total_tokens, got {self.max_prompt_tokens}, "
                             f"{self.max_total_tokens}")
        if self.temperature < 0 or not 0 < self.top_p <= 1:
            raise ValueError(f"need temperature >= 0 and 0 < top_p <= 1, got {self.temperature}, {self.top_p}")
        if self.prompt_overflow not in ("error", "truncate_left"):
            raise ValueError(f"prompt_overflow must be 'error' or 'truncate_left', got {self.prompt_overflow!r}")


def _truncation() -> dict[str, int]:
    return {"prompt_tokens": 0, "obs_tokens": 0, "obs_blocks": 0, "budget_tokens": 0}


@dataclass
class Trajectory:
    row_id: str  # the record's id: what the engine sees with every query
    group_id: int  # index of the record in this rollout's batch: the n samples of a question share it
    sample: int  # 0..n-1 within the group
    data_source: str
    question: str
    golden_answers: list[str]
    prompt_ids: list[int]
    response_ids: list[int] = field(default_factory=list)  # everything after the prompt
    info_mask: list[int] = field(default_factory=list)  # 1: sampled by the policy; 0: inserted by the rollout
    # The sampler's log-probs of response_ids (0.0 on inserted tokens), when the backend reports them.
    sampler_logprobs: list[float] | None = field(default_factory=list)
    response: str = ""  # decode(response_ids)
    answer: str | None = None
    reward: float = 0.0
    metrics: dict[str, float] = field(default_factory=dict)  # em, cover_em, f1
    turns: int = 0  # generations, the forced-answer one included
    searches: int = 0
    valid_actions: int = 0
    invalid_actions: int = 0
    queries: list[str] = field(default_factory=list)
    documents: list[list[Document]] = field(default_factory=list)  # per search: what the engine returned
    draws: list[str | None] = field(default_factory=list)  # per search: "useful"/"noisy" (simulator), else None
    engine_fallbacks: int = 0  # searches the engine gave up on ("No results found." fallback documents)
    stop_reasons: list[str] = field(default_factory=list)  # per turn: "stop", "eos" or "length"
    generated_tokens: int = 0  # every token the backend returned, including any cut at the budget
    truncation: dict[str, int] = field(default_factory=_truncation)
    end: EndReason | None = None

    @property
    def finished(self) -> bool:
        """The policy gave an answer."""
        return self.end == "answer"

    def room(self, cfg: RolloutConfig) -> int:
        return cfg.max_total_tokens - len(self.prompt_ids) - len(self.response_ids)

    def add_generated(self, ids: list[int], logprobs: list[float] | None) -> None:
        self.response_ids += ids
        self.info_mask += [1] * len(ids)
        if self.sampler_logprobs is not None and logprobs is not None:
            self.sampler_logprobs += logprobs[: len(ids)]
        else:
            self.sampler_logprobs = None

    def add_inserted(self, ids: list[int], cfg: RolloutConfig) -> None:
        """Append text the rollout inserted (mask 0), cut to the remaining budget (counted)."""
        keep = ids[: max(self.room(cfg), 0)]
        self.truncation["budget_tokens"] += len(ids) - len(keep)
        self.response_ids += keep
        self.info_mask += [0] * len(keep)
        if self.sampler_logprobs is not None:
            self.sampler_logprobs += [0.0] * len(keep)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "finished": self.finished}


def _encode(tokenizer: Any, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False).input_ids


def encode_prompt(question: str, tokenizer: Any, cfg: RolloutConfig) -> tuple[list[int], int]:
    """The prompt's ids and how many tokens left-truncation dropped."""
    # A chat template writes its own special tokens; a base model's tokenizer adds its BOS itself.
    chat = getattr(tokenizer, "chat_template", None) is not None
    ids = tokenizer(search_agent_prompt(question, tokenizer), add_special_tokens=not chat).input_ids
    over = len(ids) - cfg.max_prompt_tokens
    if over > 0 and cfg.prompt_overflow == "error":
        raise ValueError(f"prompt of {len(ids)} tokens exceeds max_prompt_tokens={cfg.max_prompt_tokens} "
                         f"(question {question[:80]!r}); raise the limit or set prompt_overflow='truncate_left'")
    return (ids[over:], over) if over > 0 else (ids, 0)


def information_ids(docs_text: str, tokenizer: Any, max_obs_tokens: int) -> tuple[list[int], int]:
    """The ids of INFORMATION.format(documents=docs_text), at most max_obs_tokens, and how many document
    tokens were dropped. The documents are cut, never the tags, so the block stays well-formed."""
    head, tail = (_encode(tokenizer, s) for s in INFORMATION.split("{documents}"))
    body = _encode(tokenizer, docs_text)
    keep = max(max_obs_tokens - len(head) - len(tail), 0)
    return head + body[:keep] + tail, max(len(body) - keep, 0)


@dataclass
class RolloutStats:
    trajectories: int
    mean_turns: float
    mean_searches: float
    valid_action_rate: float  # valid / (valid + invalid) actions
    answered_rate: float
    mean_reward: float
    mean_response_tokens: float
    mean_policy_tokens: float  # response tokens with info_mask 1
    generated_tokens: int
    backend_calls: int
    engine_calls: int
    gen_seconds: float
    engine_seconds: float
    seconds: float
    ends: dict[str, int]
    truncation: dict[str, int]  # summed over trajectories
    draws: dict[str, int]  # useful / noisy documents sets served by a simulated engine
    engine_fallbacks: int

    @classmethod
    def of(cls, trajs: Sequence[Trajectory], **timing: Any) -> RolloutStats:
        n = max(len(trajs), 1)
        actions = sum(t.valid_actions + t.invalid_actions for t in trajs)
        trunc = Counter(_truncation())
        for t in trajs:
            trunc.update(t.truncation)
        return cls(
            trajectories=len(trajs),
            mean_turns=sum(t.turns for t in trajs) / n,
            mean_searches=sum(t.searches for t in trajs) / n,
            valid_action_rate=sum(t.valid_actions for t in trajs) / max(actions, 1),
            answered_rate=sum(t.finished for t in trajs) / n,
            mean_reward=sum(t.reward for t in trajs) / n,
            mean_response_tokens=sum(len(t.response_ids) for t in trajs) / n,
            mean_policy_tokens=sum(sum(t.info_mask) for t in trajs) / n,
            generated_tokens=sum(t.generated_tokens for t in trajs),
            ends=dict(Counter(str(t.end) for t in trajs)),
            truncation=dict(trunc),
            draws=dict(Counter(d for t in trajs for d in t.draws if d is not None)),
            engine_fallbacks=sum(t.engine_fallbacks for t in trajs),
            **timing,
        )

    @property
    def tokens_per_s(self) -> float:
        """Generated tokens per second of generation time."""
        return self.generated_tokens / self.gen_seconds if self.gen_seconds > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "tokens_per_s": self.tokens_per_s}


class Rollout(list[Trajectory]):
    """The trajectories (record-major: the n samples of record g are rows g*n .. g*n+n-1) plus `stats`."""

    def __init__(self, trajectories: list[Trajectory], stats: RolloutStats):
        super().__init__(trajectories)
        self.stats = stats


def rollout(records: Sequence[QARecord], backend: GenerationBackend, tokenizer: Any, engine: SearchEngine,
            cfg: RolloutConfig, *, noise_prob: float | None = None, seed: int = 0) -> Rollout:
    """Run every record `cfg.n` times to the end. `noise_prob` is the curriculum's p at this step (sent
    with every query); `seed` makes the sampling reproducible (turn t samples with seed * 1000 + t)."""
    t_start = time.perf_counter()
    trajs: list[Trajectory] = []
    for g, rec in enumerate(records):
        prompt, dropped = encode_prompt(rec.question, tokenizer, cfg)
        for j in range(cfg.n):
            t = Trajectory(row_id=rec.id, group_id=g, sample=j, data_source=rec.data_source, question=rec.question,
                           golden_answers=list(rec.golden_answers), prompt_ids=list(prompt))
            t.truncation["prompt_tokens"] = dropped
            trajs.append(t)
    invalid_ids, force_ids = _encode(tokenizer, INVALID_ACTION), _encode(tokenizer, FORCE_ANSWER)
    policy_text: list[list[str]] = [[] for _ in trajs]  # what the policy wrote, turn by turn
    gen_s = engine_s = 0.0
    backend_calls = engine_calls = 0
    active = list(range(len(trajs)))

    for turn in range(cfg.max_turns + 1):
        final = turn == cfg.max_turns
        if final:
            for i in active:
                trajs[i].add_inserted(force_ids, cfg)
            active = _keep_with_room(trajs, active, cfg)
        if not active:
            break
        caps = [min(cfg.max_new_tokens_per_turn, trajs[i].room(cfg)) for i in active]
        t0 = time.perf_counter()
        outs = backend.generate([trajs[i].prompt_ids + trajs[i].response_ids for i in active], max(caps),
                                STOP_STRINGS, cfg.temperature, cfg.top_p, seed * 1000 + turn)
        gen_s += time.perf_counter() - t0
        backend_calls += 1
        if len(outs) != len(active):
            raise RuntimeError(f"generation backend returned {len(outs)} outputs for {len(active)} prompts")

        searchers: list[int] = []
        requests: list[SearchRequest] = []
        for i, out, cap in zip(active, outs, caps):
            t = trajs[i]
            ids = out.token_ids[:cap]  # a row near the budget may have been given more than its room
            text = out.text if len(ids) == len(out.token_ids) else tokenizer.decode(ids, skip_special_tokens=False)
            t.truncation["budget_tokens"] += len(out.token_ids) - len(ids)
            t.generated_tokens += len(out.token_ids)
            t.add_generated(ids, out.logprobs)
            t.turns += 1
            t.stop_reasons.append(out.stopped_by)
            policy_text[i].append(text)
            m = _ACTION.search(text)
            action, content = (m.group(1), m.group(2).strip()) if m else (None, "")
            if action == "answer":
                t.valid_actions += 1
                t.end = "answer"
            elif t.room(cfg) <= 0:  # cut at the budget: nothing more can follow
                t.end = "context"
            elif out.stopped_by == "eos" and len(ids) == len(out.token_ids):  # the policy ended its output
                t.invalid_actions += 1
                t.end = "eos"
            elif final:  # no searches left: a query here is not run, the row ends unanswered
                t.invalid_actions += 1
                t.end = "no_answer"
            elif action == "search" and content:
                t.valid_actions += 1
                t.searches += 1
                t.queries.append(content)
                searchers.append(i)
                requests.append(SearchRequest(query=content, k=cfg.k, row_id=t.row_id, question=t.question,
                                              golden_answers=list(t.golden_answers), noise_prob=noise_prob))
            else:  # no complete tag, or an empty query
                t.invalid_actions += 1
                t.add_inserted(invalid_ids, cfg)

        if requests:
            t0 = time.perf_counter()
            results = engine.search(requests)
            engine_s += time.perf_counter() - t0
            engine_calls += 1
            if len(results) != len(requests):
                raise RuntimeError(f"search engine returned {len(results)} results for {len(requests)} queries")
            for i, docs in zip(searchers, results):
                t = trajs[i]
                t.documents.append(docs)
                t.draws.append(next((d.meta["mode"] for d in docs if "mode" in d.meta), None))
                t.engine_fallbacks += any(d.meta.get("fallback") for d in docs)
                ids, dropped = information_ids(format_documents(docs), tokenizer, cfg.max_obs_tokens)
                t.truncation["obs_tokens"] += dropped
                t.truncation["obs_blocks"] += dropped > 0
                t.add_inserted(ids, cfg)
        active = _keep_with_room(trajs, [i for i in active if trajs[i].end is None], cfg)

    for t, texts in zip(trajs, policy_text):
        policy = "".join(texts)
        t.response = tokenizer.decode(t.response_ids, skip_special_tokens=False)
        # Only a row that answered has an answer: an "<answer>" opened in a turn cut at its budget and
        # closed in a later turn (read as an invalid action there) is no answer, and earns nothing.
        t.answer = extract_answer(policy) if t.finished else None
        t.reward = f1_reward(policy, t.golden_answers, format_weight=cfg.format_weight) if t.finished else 0.0
        t.metrics = answer_metrics(t.answer, t.golden_answers)
    stats = RolloutStats.of(trajs, backend_calls=backend_calls, engine_calls=engine_calls, gen_seconds=gen_s,
                            engine_seconds=engine_s, seconds=time.perf_counter() - t_start)
    return Rollout(trajs, stats)


def _keep_with_room(trajs: list[Trajectory], rows: list[int], cfg: RolloutConfig) -> list[int]:
    """The rows that can still generate; the others end here, out of context budget."""
    keep = []
    for i in rows:
        if trajs[i].room(cfg) > 0:
            keep.append(i)
        else:
            trajs[i].end = "context"
    return keep


# --- tensors for the trainer -------------------------------------------------------------------------


def collate(trajectories: Sequence[Trajectory], pad_id: int) -> dict[str, Tensor]:
    """Batch B trajectories as the policy sees them: `input_ids` [B, P+R] is each prompt left-padded to
    P followed by its response right-padded to R, so response token j of every row sits at column P+j.

    `position_ids` count real tokens only (as `generate` did with left padding), so log-probs recomputed
    here are those of the sampler. `response_mask` [B, R] marks real response tokens, `info_mask` [B, R]
    the policy's own; `rewards` [B]; `sampler_logprobs` [B, R] when the backend reported them. The
    trainer adds `old_logprobs` (and `ref_logprobs`) with `compute_logprobs`.
    """
    B = len(trajectories)
    P = max(len(t.prompt_ids) for t in trajectories)
    R = max(max(len(t.response_ids) for t in trajectories), 1)
    input_ids = torch.full((B, P + R), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((B, P + R), dtype=torch.long)
    response_mask = torch.zeros((B, R), dtype=torch.long)
    info_mask = torch.zeros((B, R), dtype=torch.long)
    for b, t in enumerate(trajectories):
        p, r = len(t.prompt_ids), len(t.response_ids)
        input_ids[b, P - p: P] = torch.tensor(t.prompt_ids, dtype=torch.long)
        input_ids[b, P: P + r] = torch.tensor(t.response_ids, dtype=torch.long)
        attention_mask[b, P - p: P + r] = 1
        response_mask[b, :r] = 1
        info_mask[b, :r] = torch.tensor(t.info_mask, dtype=torch.long)
    batch = {"input_ids": input_ids, "attention_mask": attention_mask,
             "position_ids": (attention_mask.cumsum(-1) - 1).clamp(min=0), "response_mask": response_mask,
             "info_mask": info_mask, "rewards": torch.tensor([t.reward for t in trajectories], dtype=torch.float)}
    if all(t.sampler_logprobs is not None for t in trajectories):
        lp = torch.zeros((B, R))
        for b, t in enumerate(trajectories):
            lp[b, : len(t.sampler_logprobs)] = torch.tensor(t.sampler_logprobs)  # type: ignore[arg-type]
        batch["sampler_logprobs"] = lp
    return batch


def compute_logprobs(model: Any, batch: dict[str, Tensor], temperature: float = 1.0, micro_batch: int = 8,
                     grad: bool = False, with_entropy: bool = False,
                     keep: Tensor | None = None) -> Tensor | tuple[Tensor, Tensor]:
    """log pi(y_t | context) of every response token, [B, R] float32, 0 on padding (and, with
    `with_entropy`, the per-token entropy of pi, also [B, R]).

    Logits are divided by `temperature` (the rollout's, so the scores are those of the sampling
    distribution; use 1.0 for greedy rollouts). Only the last R+1 positions' logits are materialised;
    with `keep` [B, R] (the loss mask), only those positions' (zerosearch.agent.head), the rest being 0.
    No graph is kept unless `grad=True` (the policy loss); old and reference log-probs use the default.
    """
    from zerosearch.agent.head import masked_logprobs, outputs_for

    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    device = next(model.parameters()).device
    R = batch["response_mask"].shape[1]
    net, output, head = outputs_for(model, keep)
    logps, ents = [], []
    with torch.set_grad_enabled(grad):
        for s in range(0, batch["input_ids"].shape[0], micro_batch):
            ids = batch["input_ids"][s: s + micro_batch].to(device)
            m = batch["response_mask"][s: s + micro_batch].to(device)
            if keep is not None:
                m = m * keep[s: s + micro_batch].to(device)
            out = net(input_ids=ids, attention_mask=batch["attention_mask"][s: s + micro_batch].to(device),
                      position_ids=batch["position_ids"][s: s + micro_batch].to(device), use_cache=False,
                      **({"logits_to_keep": R + 1} if head is None else {}))
            # position t predicts token t + 1: the outputs at the R positions before each response token
            lp = masked_logprobs(output(out)[:, -(R + 1):-1], ids[:, -R:], m, temperature, with_entropy, head)
            logps.append(lp[0] if with_entropy else lp)
            ents.append(lp[1] if with_entropy else None)
    return (torch.cat(logps), torch.cat(ents)) if with_entropy else torch.cat(logps)
