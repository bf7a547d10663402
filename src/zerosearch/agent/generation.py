"""Where the policy's tokens come from during a rollout: a small interface, a transformers backend and a
vLLM backend.

Every backend takes token-id prompts and returns, per prompt, the *sampled token ids* themselves (plus
their decoded text for parsing). The rollout appends those ids to the trajectory unchanged, so the ids
the trainer scores are exactly the ids the sampler drew; the reference code decoded, cut and
re-tokenised the text, which can yield different ids (off-policy drift).

Each row stops at the token that completes its first stop string (`</search>` / `</answer>`), at an
end-of-sequence token (kept: the policy sampled it), or after `max_new_tokens` ("length").
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from zerosearch.agent.precision import autocast
from zerosearch.agent.prefix_cache import PrefixCache, UnsupportedModel, cache_kwarg, left_pad, output_cache

StopReason = Literal["stop", "eos", "length"]
STOP_STRINGS = ("</search>", "</answer>")


@dataclass
class GenOutput:
    token_ids: list[int]  # the sampled ids, ending with the stop-string or eos token when there is one
    text: str  # tokenizer.decode(token_ids): what the rollout parses
    stopped_by: StopReason
    logprobs: list[float] | None = None  # the sampler's own log-probs of token_ids, when it reports them


class GenerationBackend(Protocol):
    """What `zerosearch.agent.rollout.rollout` needs from a generator. Outputs are in prompt order."""

    def generate(self, prompts_token_ids: list[list[int]], max_new_tokens: int, stop_strings: Sequence[str],
                 temperature: float, top_p: float, seed: int) -> list[GenOutput]: ...


def first_stop(ids: list[int], tokenizer: Any, stop_strings: Sequence[str]) -> tuple[int, str | None]:
    """(n, s): the shortest prefix ids[:n] whose text contains a stop string s; (len(ids), None) if none.

    Binary search over prefix lengths (containment only grows with the prefix), so a 500-token turn costs
    about ten decodes, and any tokenizer works, including stop strings split across tokens.
    """
    decode = lambda n: tokenizer.decode(ids[:n], skip_special_tokens=False)
    if not any(s in decode(len(ids)) for s in stop_strings):
        return len(ids), None
    lo, hi = 1, len(ids)  # invariant: ids[:hi] contains a stop string
    while lo < hi:
        mid = (lo + hi) // 2
        if any(s in decode(mid) for s in stop_strings):
            hi = mid
        else:
            lo = mid + 1
    text = decode(hi)
    return hi, min((s for s in stop_strings if s in text), key=text.find)


class HFBackend:
    """transformers `generate`, micro-batched: rows sorted by length (less padding), left-padded.

    Sampling is seeded per call and micro-batch inside a forked RNG (reproducible; the caller's global RNG
    is untouched); temperature 0 decodes greedily. The model's own generation defaults (top-k 50,
    repetition penalty, ...) are overridden so the sampler draws from softmax(logits / T) with top-p only,
    i.e. from the distribution whose log-probs the trainer computes.

    `logprobs=True` also returns each sampled token's log-prob under that distribution (log_softmax of the
    step's logits / T; T = 1 when greedy, as the trainer scores greedy rollouts), so the trainer can skip
    its separate old-log-prob forward (`optim.reuse_sampler_logprobs`). The sampled ids are unchanged.

    `kv_cache_tokens > 0` keeps the keys/values of what each row already ran (up to that many tokens in
    all; zerosearch.agent.prefix_cache), so a rollout's next turn feeds only its new tokens and a GRPO group's
    shared prompt is prefilled once (`optim.reuse_kv_cache`). Same distribution, same seeds: only float
    rounding differs from a fresh prefill (tests/test_prefix_cache.py).
    """

    def __init__(self, model: Any, tokenizer: Any, batch_size: int = 8, device: str | None = None,
                 logprobs: bool = False, kv_cache_tokens: int = 0, precision: str = "fp32"):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.model, self.tokenizer, self.batch_size, self.logprobs = model, tokenizer, batch_size, logprobs
        self.device = device or str(next(model.parameters()).device)
        self.precision = precision  # "bf16": forward passes under bf16 autocast (zerosearch.agent.precision)
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        eos = model.generation_config.eos_token_id
        eos = [] if eos is None else [eos] if isinstance(eos, int) else list(eos)
        self.eos_ids = sorted(set(eos) | {tokenizer.eos_token_id} - {None})
        # Building the criterion scans the whole vocabulary (~0.2 s): once per set of stop strings, and
        # for the rollout's own set here rather than inside the first timed generation.
        self._stoppers: dict[tuple[str, ...], Any] = {}
        self._stopper(STOP_STRINGS)
        self.gen_seconds = 0.0
        self.prefix = None
        if kv_cache_tokens:
            try:
                self.prefix = PrefixCache(model, kv_cache_tokens)
            except UnsupportedModel as e:  # a speed option must never change the samples: off, and said once
                print(f"warning: {e}; it is off, each turn is prefilled afresh", file=sys.stderr)

    def _stopper(self, stops: tuple[str, ...]) -> Any:
        from transformers import StoppingCriteriaList, StopStringCriteria

        if stops not in self._stoppers:
            self._stoppers[stops] = StoppingCriteriaList([StopStringCriteria(self.tokenizer, list(stops))])
        return self._stoppers[stops]

    def generate(self, prompts_token_ids: list[list[int]], max_new_tokens: int, stop_strings: Sequence[str] = STOP_STRINGS,
                 temperature: float = 1.0, top_p: float = 1.0, seed: int = 0) -> list[GenOutput]:
        import torch

        if temperature < 0 or not 0 < top_p <= 1 or max_new_tokens < 1:
            raise ValueError(f"need temperature >= 0, 0 < top_p <= 1, max_new_tokens >= 1; got "
                             f"{temperature}, {top_p}, {max_new_tokens}")
        sample = temperature > 0
        kwargs: dict[str, Any] = {"max_new_tokens": max_new_tokens, "do_sample": sample, "pad_token_id": self.pad_id,
                                  "eos_token_id": self.eos_ids, "repetition_penalty": 1.0}
        if sample:  # top_k=0 switches off transformers' default top-k of 50
            kwargs.update(temperature=temperature, top_p=top_p, top_k=0)
        else:  # an instruct model's generation_config may carry sampling defaults; greedy means greedy
            kwargs.update(temperature=None, top_p=None, top_k=None)
        if stop_strings:
            kwargs["stopping_criteria"] = self._stopper(tuple(stop_strings))
        order = sorted(range(len(prompts_token_ids)), key=lambda i: len(prompts_token_ids[i]))
        t0 = time.perf_counter()
        with autocast(self.precision, self.device):
            out = self._batches(prompts_token_ids, order, stop_strings, kwargs, seed, temperature if sample else 1.0)
        self.gen_seconds += time.perf_counter() - t0
        return out

    def _batches(self, prompts_token_ids: list[list[int]], order: list[int], stop_strings: Sequence[str],
                 kwargs: dict[str, Any], seed: int, temperature: float) -> list[GenOutput]:
        import torch

        out: list[GenOutput | None] = [None] * len(order)
        devices = [torch.device(self.device)] if self.device.startswith("cuda") else []
        used: list[tuple[int, ...]] = []
        stored: list[tuple[int, ...]] = []
        if self.prefix is not None:
            self.prefix.begin_call()
            self.prefix.prefill_shared(list(prompts_token_ids), self.pad_id, self.device, self.batch_size)
        for b in range(0, len(order), self.batch_size):
            idx = order[b: b + self.batch_size]
            prompts = [list(prompts_token_ids[i]) for i in idx]
            built = self.prefix.batch_cache(prompts, self.pad_id) if self.prefix is not None else None
            if built is None:
                ids, mask = left_pad(prompts, self.pad_id)
                cache_kw = {}
            else:
                cache, ids, mask, hit = built
                cache_kw, used = {cache_kwarg(): cache}, used + hit
            width = ids.shape[1]
            # no_grad, not inference_mode: under bf16 autocast, inference_mode defeats autocast's cache of
            # the weights' bf16 casts, so every decode step re-cast all weights (~30% of a decode step here)
            with torch.random.fork_rng(devices=devices), torch.no_grad():
                torch.manual_seed(seed * 1_000_003 + b // self.batch_size)
                res = self.model.generate(input_ids=ids.to(self.device), attention_mask=mask.to(self.device),
                                          return_dict_in_generate=True, output_logits=self.logprobs, **kwargs,
                                          **cache_kw)
                new = res.sequences[:, width:]
                lps = _sampled_logprobs(res.logits, new, temperature) if self.logprobs else None
            for r, (row, i) in enumerate(zip(new.tolist(), idx)):
                out[i] = self._finish(row, stop_strings, None if lps is None else lps[r])
            if self.prefix is not None:  # KV exists for every sampled token but the last of the batch
                stored += self.prefix.store(output_cache(res), mask, [p + out[i].token_ids[: new.shape[1] - 1]  # type: ignore[union-attr]
                                                   for p, i in zip(prompts, idx)])
        if self.prefix is not None:
            self.prefix.end_call(used, stored)
        return out  # type: ignore[return-value]  # every slot was filled

    def _finish(self, row: list[int], stop_strings: Sequence[str], logprobs: list[float] | None = None) -> GenOutput:
        """Cut one generated row: after its first stop string, else after its first eos; the rest is the
        padding generate appends to rows that finished before the others."""
        n, stop = first_stop(row, self.tokenizer, stop_strings)
        reason: StopReason = "stop"
        if stop is None:
            eos_at = [row.index(e) for e in self.eos_ids if e in row]
            n, reason = (min(eos_at) + 1, "eos") if eos_at else (len(row), "length")
        ids = row[:n]
        return GenOutput(ids, self.tokenizer.decode(ids, skip_special_tokens=False), reason,
                         None if logprobs is None else logprobs[:n])


def _sampled_logprobs(logits: Any, new: Any, temperature: float) -> list[list[float]]:
    """log softmax(logits_t / T)[y_t] per row and step, in float32. These are generate's raw logits (before
    top-p), i.e. exactly what `rollout.compute_logprobs` computes from a full forward. Step by step, so no
    [rows, steps, vocab] copy is made."""
    import torch

    cols = [torch.log_softmax(step.float() / temperature, -1).gather(-1, new[:, t, None])
            for t, step in enumerate(logits)]
    return torch.cat(cols, dim=1).tolist()


class VLLMBackend:
    """vLLM offline inference (`vllm.LLM`), imported only when used (`pip install zerosearch[vllm]`).

    One request per prompt, each with its own seed: identical prompts (the n samples of a question) must
    not share a seed, or vLLM would return n identical samples. `logprobs=0` makes vLLM report the sampled
    token's log-prob, kept as `GenOutput.logprobs` to compare sampler and trainer numerics.
    """

    def __init__(self, llm: Any, tokenizer: Any):
        self.llm, self.tokenizer = llm, tokenizer
        self.gen_seconds = 0.0

    def generate(self, prompts_token_ids: list[list[int]], max_new_tokens: int, stop_strings: Sequence[str] = STOP_STRINGS,
                 temperature: float = 1.0, top_p: float = 1.0, seed: int = 0) -> list[GenOutput]:
        from vllm import SamplingParams

        params = [SamplingParams(n=1, temperature=temperature, top_p=top_p, max_tokens=max_new_tokens,
                                 stop=list(stop_strings), include_stop_str_in_output=True, logprobs=0,
                                 seed=seed * 1_000_003 + i) for i in range(len(prompts_token_ids))]
        # A TokensPrompt is a TypedDict: the plain dict is the documented form.
        prompts = [{"prompt_token_ids": list(p)} for p in prompts_token_ids]
        t0 = time.perf_counter()
        results = self.llm.generate(prompts, params, use_tqdm=False)
        self.gen_seconds += time.perf_counter() - t0
        return [self._output(r.outputs[0]) for r in results]

    def _output(self, c: Any) -> GenOutput:
        ids = list(c.token_ids)
        # stop_reason: the matched stop string, an eos/stop token id, or None (eos, or length).
        if c.finish_reason == "length":
            reason: StopReason = "length"
        else:
            reason = "stop" if isinstance(c.stop_reason, str) else "eos"
        logprobs = [step[t].logprob for step, t in zip(c.logprobs, ids)] if c.logprobs is not None else None
        return GenOutput(ids, self.tokenizer.decode(ids, skip_special_tokens=False), reason, logprobs)
