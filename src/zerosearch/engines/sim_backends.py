"""Where the simulator's text comes from: an in-process transformers model, or OpenAI-compatible servers.

Both backends take user messages (the rendered simulator prompts) and return one `Generation` per
message, in order. The local backend raises on failure (it is a bug or an OOM, not a flaky network);
the remote one never lets a single dead request sink a training batch:

* each request is retried at most `retries` times with exponential back-off (`backoff * 2**i` s),
  moving to the next endpoint each attempt (round-robin, so a dead server is failed over);
* a request that still fails becomes a *fallback*: `Generation(text="", error=...)`, counted in
  `stats()["fallbacks"]`; the engine turns it into a flagged "No results found." document;
* if every request of a batch fails, `max_dead_batches` batches in a row, the endpoint is dead and
  `SearchError` is raised so the run stops instead of training on fallbacks.
Worst-case time for one batch is bounded: `(retries + 1) * timeout + backoff * (2**retries - 1)` per
request, requests in parallel up to `concurrency`.
"""

from __future__ import annotations

import itertools
import os
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import httpx

from zerosearch.engines import Counters, SearchError
from zerosearch.engines.http import redactor, request_json

FinishReason = Literal["stop", "length", "error"]


@dataclass
class Generation:
    text: str
    finish_reason: FinishReason  # "length": hit max_new_tokens (the last document may be cut short)
    error: str | None = None  # set when the backend gave up on this message (a fallback)


class SimBackend(Protocol):
    """What `SimulatedEngine` needs from a backend."""

    def identity(self) -> str: ...
    def generate(self, prompts: Sequence[str], stop: Sequence[str] = (), prefix: str = "") -> list[Generation]: ...
    def stats(self) -> dict[str, Any]: ...
    def state_dict(self) -> dict[str, Any]: ...
    def load_state_dict(self, state: dict[str, Any]) -> None: ...
    def close(self) -> None: ...


class TransformersBackend:
    """Batched generation with a local model (chat template for instruct models, raw text for base).

    Prompts are sorted by length and generated `batch_size` at a time with left padding; sampling is
    seeded per batch from (`seed`, batch counter) inside a forked RNG, so a run is reproducible and the
    caller's global torch RNG is untouched. `temperature == 0` decodes greedily.
    """

    name = "transformers"

    def __init__(self, model_name_or_path: str, device: str = "auto", dtype: str = "auto", batch_size: int = 8,
                 max_new_tokens: int = 400, temperature: float = 1.0, top_p: float = 1.0, seed: int = 0,
                 *, loaded: tuple[Any, Any] | None = None):
        """`loaded=(model, tokenizer)` reuses a model already in memory (e.g. a simulator just tuned)."""
        import torch

        if batch_size < 1 or max_new_tokens < 1:
            raise ValueError(f"batch_size and max_new_tokens must be >= 1, got {batch_size}, {max_new_tokens}")
        if temperature < 0 or not 0 < top_p <= 1:
            raise ValueError(f"need temperature >= 0 and 0 < top_p <= 1, got {temperature}, {top_p}")
        self.model_name = model_name_or_path
        self.device = ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device
        if dtype == "auto":
            dtype = "bfloat16" if self.device.startswith("cuda") else "float32"
        if loaded is None:
            from zerosearch.models import load

            loaded = load(model_name_or_path, dtype=getattr(torch, dtype), device=self.device)
        self.model, self.tokenizer = loaded
        self.model.eval()
        self.tokenizer.padding_side = "left"  # generation continues from the right end of every row
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.batch_size, self.max_new_tokens = batch_size, max_new_tokens
        self.temperature, self.top_p, self.seed = temperature, top_p, seed
        self._batches = 0  # seeds batch i with (seed, i): reproducible, and no two batches share a stream
        self._stoppers: dict[tuple[str, ...], Any] = {}
        self._lock = threading.Lock()  # one generate at a time: the batch counter and the device are shared
        self.counters = Counters(prompts=0, batches=0, new_tokens=0, gen_seconds=0.0)

    def identity(self) -> str:
        dtype = str(next(self.model.parameters()).dtype).removeprefix("torch.")
        # Weights other than fp32 write other documents: part of what makes two runs comparable.
        cast = "" if dtype == "float32" else f":dtype={dtype}"
        return f"transformers:{self.model_name}:T={self.temperature}:top_p={self.top_p}:max={self.max_new_tokens}{cast}"

    def _stopping(self, stop: tuple[str, ...]) -> Any:
        from transformers import StoppingCriteriaList, StopStringCriteria

        if stop not in self._stoppers:  # building the criterion scans the vocabulary: do it once
            self._stoppers[stop] = StoppingCriteriaList([StopStringCriteria(self.tokenizer, list(stop))])
        return self._stoppers[stop]

    def generate(self, prompts: Sequence[str], stop: Sequence[str] = (), prefix: str = "") -> list[Generation]:
        """`prefix` starts the model's reply (e.g. "Doc 1:") and is included in the returned text."""
        with self._lock:
            return self._generate(prompts, stop, prefix)

    def _generate(self, prompts: Sequence[str], stop: Sequence[str], prefix: str) -> list[Generation]:
        import torch

        from zerosearch.prompts import render_prompt

        texts = [render_prompt(p, self.tokenizer) + prefix for p in prompts]
        lengths = [len(self.tokenizer(t, add_special_tokens=False).input_ids) for t in texts]
        order = sorted(range(len(texts)), key=lambda i: lengths[i])  # similar lengths pad less
        out: list[Generation | None] = [None] * len(texts)
        eos = self.tokenizer.eos_token_id
        sample = self.temperature > 0
        for b in range(0, len(order), self.batch_size):
            idx = order[b: b + self.batch_size]
            enc = self.tokenizer([texts[i] for i in idx], return_tensors="pt", padding=True,
                                 add_special_tokens=False).to(self.device)
            kwargs: dict[str, Any] = {"do_sample": sample, "max_new_tokens": self.max_new_tokens,
                                      "pad_token_id": self.tokenizer.pad_token_id, "eos_token_id": eos}
            if sample:
                kwargs.update(temperature=self.temperature, top_p=self.top_p)
            else:  # an instruct model's generation_config may carry sampling defaults; greedy means greedy
                kwargs.update(temperature=None, top_p=None, top_k=None)
            if stop:
                kwargs["stopping_criteria"] = self._stopping(tuple(stop))
            devices = [torch.device(self.device)] if self.device.startswith("cuda") else []
            t0 = time.perf_counter()
            with torch.random.fork_rng(devices=devices), torch.inference_mode():
                torch.manual_seed(self.seed * 1_000_003 + self._batches)
                ids = self.model.generate(**enc, **kwargs)
            self._batches += 1
            new = ids[:, enc.input_ids.shape[1]:]
            pad = self.tokenizer.pad_token_id
            for row, i in zip(new.tolist(), idx):
                ended = eos in row
                n = row.index(eos) if ended else len(row)
                while not ended and n and pad != eos and row[n - 1] == pad:
                    n -= 1  # rows a stop string ended early are right-padded
                text = self.tokenizer.decode(row[:n], skip_special_tokens=True)
                cuts = [text.find(s) for s in stop if s in text]
                if cuts:  # drop the stop string itself, as OpenAI-compatible servers do
                    text = text[: min(cuts)]
                finish: FinishReason = "stop" if ended or n < self.max_new_tokens else "length"
                out[i] = Generation(text=prefix + text, finish_reason=finish)
                self.counters.add(new_tokens=n)
            self.counters.add(prompts=len(idx), batches=1, gen_seconds=time.perf_counter() - t0)
        return out  # type: ignore[return-value]  # every slot was filled

    def stats(self) -> dict[str, Any]:
        return self.counters.snapshot()

    def state_dict(self) -> dict[str, Any]:
        return {"batches": self._batches}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._batches = int(state["batches"])

    def close(self) -> None:
        pass


def chat_completions_url(endpoint: str) -> str:
    """Accept `http://host:port`, `.../v1` or the full `.../v1/chat/completions`."""
    e = endpoint.rstrip("/")
    if e.endswith("/chat/completions"):
        return e
    return f"{e}/chat/completions" if e.endswith("/v1") else f"{e}/v1/chat/completions"


class OpenAIBackend:
    """Any OpenAI-compatible `/v1/chat/completions` server (vLLM, SGLang, llama.cpp server, ...).

    One HTTP request per prompt, sent concurrently (at most `concurrency` in flight), endpoints used
    round-robin. Failure handling is described in the module docstring.
    """

    name = "openai"

    def __init__(self, endpoints: Sequence[str], model: str, *, timeout: float = 30.0, retries: int = 3,
                 backoff: float = 0.5, api_key_env: str | None = "OPENAI_API_KEY", max_new_tokens: int = 400,
                 temperature: float = 1.0, top_p: float = 1.0, seed: int | None = 0, concurrency: int = 32,
                 max_dead_batches: int = 3, prefill: bool = False, token: str | None = None):
        """`prefill=True` sends the reply prefix as a final assistant message to continue (vLLM's
        `continue_final_message`); off by default because not every server accepts those fields, and the
        parser reads outputs without the prefix as well. `token` (a bearer token, e.g. a zerosearch or vLLM
        `--api-key` server's) takes the place of the key in `api_key_env`."""
        if not endpoints:
            raise ValueError("the OpenAI-compatible simulator needs at least one endpoint URL")
        if retries < 0 or backoff < 0 or timeout <= 0:
            raise ValueError(f"need retries >= 0, backoff >= 0, timeout > 0; got {retries}, {backoff}, {timeout}")
        if concurrency < 1 or max_dead_batches < 1:
            raise ValueError("concurrency and max_dead_batches must be >= 1")
        self.urls = [chat_completions_url(e) for e in endpoints]
        self._turn = itertools.count()  # atomic under the GIL: threads may share it
        self.model = model
        self.retries, self.backoff, self.timeout = retries, backoff, timeout
        self.max_new_tokens, self.temperature, self.top_p, self.seed = max_new_tokens, temperature, top_p, seed
        self.max_dead_batches, self.prefill = max_dead_batches, prefill
        key = token or (os.environ.get(api_key_env) if api_key_env else None)
        self._key = key
        self._scrub = redactor(key)
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        self._client = httpx.Client(timeout=timeout, headers=headers)
        self._pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="sim-openai")
        self._lock = threading.Lock()
        self._sent = 0  # request counter: per-request seeds, assigned in prompt order (reproducible)
        self._dead_batches = 0
        self.counters = Counters(prompts=0, batches=0, retries=0, fallbacks=0, dead_batches=0, completion_tokens=0,
                                 gen_seconds=0.0)

    def identity(self) -> str:
        return (f"openai:{self.model}@{','.join(sorted(self.urls))}:T={self.temperature}:top_p={self.top_p}"
                f":max={self.max_new_tokens}")

    def _redact(self, s: str) -> str:
        return self._scrub(s)

    def _one(self, prompt: str, stop: Sequence[str], prefix: str, seed: int | None) -> Generation:
        messages = [{"role": "user", "content": prompt}]
        body: dict[str, Any] = {"model": self.model, "messages": messages, "max_tokens": self.max_new_tokens,
                                "temperature": self.temperature, "top_p": self.top_p}
        prefix = prefix if self.prefill else ""
        if prefix:
            messages.append({"role": "assistant", "content": prefix})
            body.update(continue_final_message=True, add_generation_prompt=False)
        if stop:
            body["stop"] = list(stop)
        if seed is not None:
            body["seed"] = seed
        try:
            # Round-robin over requests, and each request's retries walk on from its own start: with a
            # shared cursor, concurrent requests could keep landing on the same dead endpoint.
            attempt = itertools.count(next(self._turn))
            answer = request_json(self._client, "POST", lambda: self.urls[next(attempt) % len(self.urls)],
                                  retries=self.retries, backoff=self.backoff,
                                  counters=self.counters, redact=self._redact, json=body)
            choice = answer["choices"][0]
            text = choice["message"]["content"] or ""
            if not isinstance(text, str):
                raise TypeError(f"message content is {type(text).__name__}, not text")
        except SearchError as e:
            return Generation("", "error", str(e))
        except (KeyError, IndexError, TypeError) as e:  # a 200 that is not a chat completion
            return Generation("", "error", self._redact(f"malformed chat completion ({type(e).__name__}: {e}): "
                                                        f"{str(answer)[:200]}"))
        usage = answer.get("usage") or {}
        self.counters.add(completion_tokens=usage.get("completion_tokens") or 0)
        return Generation(prefix + text, "length" if choice.get("finish_reason") == "length" else "stop")

    def generate(self, prompts: Sequence[str], stop: Sequence[str] = (), prefix: str = "") -> list[Generation]:
        if not prompts:
            return []
        with self._lock:
            first, self._sent = self._sent, self._sent + len(prompts)
        seeds = [None if self.seed is None else self.seed * 1_000_003 + first + i for i in range(len(prompts))]
        t0 = time.perf_counter()
        out = list(self._pool.map(lambda a: self._one(*a), [(p, stop, prefix, s) for p, s in zip(prompts, seeds)]))
        failed = [g for g in out if g.error is not None]
        self.counters.add(prompts=len(out), batches=1, fallbacks=len(failed), gen_seconds=time.perf_counter() - t0)
        with self._lock:
            if len(failed) < len(out):
                self._dead_batches = 0
                return out
            self._dead_batches += 1
            dead = self._dead_batches
        self.counters.add(dead_batches=1)
        if dead >= self.max_dead_batches:
            raise SearchError(f"simulator unreachable: all {len(out)} requests failed in {dead} consecutive batches "
                              f"({', '.join(self.urls)}); last error: {failed[-1].error}")
        return out

    def stats(self) -> dict[str, Any]:
        return self.counters.snapshot()

    def state_dict(self) -> dict[str, Any]:
        return {"sent": self._sent}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._sent = int(state["sent"])

    def close(self) -> None:
        self._pool.shutdown(wait=True)
        self._client.close()
