"""Reuse the attention keys/values of token prefixes the policy has already run (HFBackend's `kv_cache_tokens`).

A multi-turn rollout calls the generator once per turn with each row's whole context so far: turn t+1's
prompt is turn t's prompt + the tokens the policy sampled + the inserted <information> block. Without
reuse every turn prefills the whole context again, and the n samples of a GRPO group prefill the same
question n times. Prefill dominates CPU generation (bench/step.py: ~10k of the ~12k tokens a demo-shaped
step feeds the policy), so this module keeps, per row, the keys and values of what was already computed and
lets the next call feed only the new tokens:

    turn 1:  the group's shared prompt is prefilled once (`prefill_shared`) and copied to its n rows
    turn t:  row r reuses KV[: LCP(stored prefix, new prompt)], and only the rest is fed to the model

Keys and values at position j depend only on tokens <= j (causal attention), so any stored prefix that
agrees with the new prompt for L tokens gives exact KV for those L tokens, whatever followed it. The one
hazard is stale weights: an entry computed before an optimizer step is wrong after it, so the cache is
keyed to the parameters' in-place version counters and empties itself when any of them moved.

Entries live while they can still be continued: one not stored or used by the last two generate calls
is dropped (a finished row's, or one a `self` engine's document call made between two policy turns
leaves alone), and an entry a longer one of the same call extends is dropped at once; `max_tokens` caps
the rest. Only full-attention models with a plain dynamic cache qualify (`unsupported`): a sliding
window or ALiBi counts positions by cache index, which the padding below shifts.

Batch layout handed to `generate` (per row; W_c, W_s: the widest cached part and the widest new part):

    [ pad * (W_c - L_r) | cached KV (L_r) | pad * (W_s - s_r) | new tokens (s_r) ]

with attention mask 0 on both pads; `generate` derives positions from the mask's running sum, so the new
tokens continue at position L_r exactly as in a fresh left-padded prefill.
"""

from __future__ import annotations

import functools
from collections import OrderedDict
from typing import Any

KV = list[tuple[Any, Any]]  # per layer (keys, values), each [kv_heads, length, head_dim] for one row


def budget_tokens(rows: int, max_total_tokens: int) -> int:
    """A cache budget with room for `rows` trajectories at full length, twice: one turn's entries are still
    held while the next turn stores its longer ones."""
    return 2 * rows * max_total_tokens


@functools.cache
def cache_kwarg() -> str:
    """The name transformers gives the KV cache in a forward/generate call: `cache` since 5.24, before
    that `past_key_values` (passing the other name would be ignored or refused, not reused)."""
    import inspect

    from transformers import LlamaModel

    return "cache" if "cache" in inspect.signature(LlamaModel.forward).parameters else "past_key_values"


def output_cache(out: Any) -> Any:
    """The KV cache a forward or generate call returned, under either name (see `cache_kwarg`)."""
    cache = getattr(out, "cache", None)
    return cache if cache is not None else out.past_key_values


def common_prefix(a: tuple[int, ...], b: list[int]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


def left_pad(prompts: list[list[int]], pad_id: int) -> tuple[Any, Any]:
    """(input_ids, attention_mask) with every row right-aligned: generation continues from the right end."""
    import torch

    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for r, p in enumerate(prompts):
        ids[r, width - len(p):] = torch.tensor(p, dtype=torch.long)
        mask[r, width - len(p):] = 1
    return ids, mask


class UnsupportedModel(ValueError):
    """KV reuse would change this model's samples (`unsupported` says why)."""


# generation_config settings whose logits processors read input_ids, which hold pads where the cache is.
_READS_INPUT_IDS = ("no_repeat_ngram_size", "encoder_no_repeat_ngram_size", "bad_words_ids", "sequence_bias")


def unsupported(model: Any) -> str | None:
    """Why KV reuse would change this model's samples, or None when it would not."""
    cfg = getattr(model, "config", None)
    if cfg is None:  # not a transformers model (a test's bare module): nothing to check
        return None
    cfg = cfg.get_text_config(decoder=True) if hasattr(cfg, "get_text_config") else cfg
    types = set(getattr(cfg, "layer_types", None) or [])
    if types - {"full_attention"}:
        return f"layer types {sorted(types)} (sliding-window or linear attention)"
    if not types and getattr(cfg, "sliding_window", None) and getattr(cfg, "use_sliding_window", True):
        return f"sliding_window={cfg.sliding_window}"
    if getattr(cfg, "alibi", False) or getattr(cfg, "model_type", "") in ("bloom", "mpt"):
        return "ALiBi position bias"
    gen = getattr(model, "generation_config", None)
    if getattr(gen, "cache_implementation", None) not in (None, "dynamic"):
        return f"cache_implementation={gen.cache_implementation!r}"
    reads = [k for k in _READS_INPUT_IDS if getattr(gen, k, None)]
    return f"generation_config sets {', '.join(reads)}" if reads else None


class PrefixCache:
    """Per-row KV of token prefixes that can still be continued (module docstring), at most `max_tokens`."""

    def __init__(self, model: Any, max_tokens: int):
        if max_tokens < 1:
            raise ValueError(f"max_tokens must be >= 1, got {max_tokens}")
        why = unsupported(model)
        if why:
            raise UnsupportedModel(f"KV reuse would change this model's samples ({why}); turn optim.reuse_kv_cache off")
        self.model, self.max_tokens = model, max_tokens
        self.entries: OrderedDict[tuple[int, ...], KV] = OrderedDict()
        self.stamp: dict[tuple[int, ...], int] = {}  # the generate call that last stored or used the entry
        self.calls = self.tokens = 0
        self._version = self._weights_version()
        self.reused = self.fed = 0  # prompt tokens taken from the cache / fed to the model (for the bench)

    def _weights_version(self) -> int:
        # optimizer.step and load_state_dict write the parameters in place, which bumps _version; the
        # pointer and dtype catch a parameter replaced or cast.
        return hash(tuple((id(p), p.data_ptr(), p.dtype, p._version) for p in self.model.parameters()))

    def check_weights(self) -> None:
        v = self._weights_version()
        if v != self._version:
            self.clear()
            self._version = v

    def clear(self) -> None:
        self.entries.clear()
        self.stamp.clear()
        self.tokens = 0

    def begin_call(self) -> None:
        self.check_weights()
        self.calls += 1

    def end_call(self, used: list[tuple[int, ...]], stored: list[tuple[int, ...]]) -> None:
        """Drop what this call's longer entries extend, and what the last two calls did not touch."""
        fresh = set(stored)
        extended = [k for k in set(used) - fresh if any(len(s) > len(k) and s[: len(k)] == k for s in fresh)]
        stale = [k for k, c in self.stamp.items() if c < self.calls - 1]
        self.drop(extended + stale)

    def lookup(self, ids: list[int]) -> tuple[int, KV | None]:
        """(L, kv): the longest stored prefix of `ids`, at most len(ids) - 1 long (generate needs one new
        token to feed), and its KV (to be sliced to L); (0, None) when none agrees on the first token."""
        best, best_kv = 0, None
        if not ids:
            return 0, None
        for key, kv in self.entries.items():
            if key[0] != ids[0] or len(key) <= best:
                continue
            n = common_prefix(key, ids)
            if n > best:
                best, best_kv = n, kv
        best = min(best, len(ids) - 1)
        return (best, best_kv) if best > 0 else (0, None)

    def put(self, ids: tuple[int, ...], kv: KV) -> None:
        if not ids:
            return
        if ids not in self.entries:
            self.entries[ids] = kv
            self.tokens += len(ids)
        self.touch(ids)
        while self.tokens > self.max_tokens and len(self.entries) > 1:
            old = next(iter(self.entries))
            self.drop([old])

    def drop(self, keys: list[tuple[int, ...]]) -> None:
        for key in keys:
            if self.entries.pop(key, None) is not None:
                self.tokens -= len(key)
                self.stamp.pop(key, None)

    def touch(self, ids: tuple[int, ...]) -> None:
        if ids in self.entries:
            self.entries.move_to_end(ids)
            self.stamp[ids] = self.calls

    # --- building and reading batch caches ------------------------------------------------------------

    def prefill_shared(self, prompts: list[list[int]], pad_id: int, device: str, batch_size: int) -> None:
        """Prefill each distinct prompt that appears more than once (a GRPO group) and has no stored
        prefix but its last token, once, `batch_size` at a time, and store its KV, so its rows reuse it
        instead of each prefilling it."""
        import torch

        counts: dict[tuple[int, ...], int] = {}
        for p in prompts:
            counts[tuple(p)] = counts.get(tuple(p), 0) + 1
        todo = [list(p[:-1]) for p, c in counts.items()
                if c > 1 and len(p) > 1 and self.lookup(list(p))[0] < len(p) - 1]
        for b in range(0, len(todo), batch_size):
            chunk = todo[b: b + batch_size]
            ids, mask = left_pad(chunk, pad_id)
            pos = (mask.cumsum(-1) - 1).clamp(min=0)
            with torch.no_grad():  # (not inference_mode: see generation.py) logits_to_keep=1: only the cache
                out = self.model(input_ids=ids.to(device), attention_mask=mask.to(device),
                                 position_ids=pos.to(device), use_cache=True, logits_to_keep=1)
            self.fed += int(mask.sum())
            self.store(output_cache(out), mask, chunk)

    def batch_cache(self, prompts: list[list[int]], pad_id: int) -> tuple[Any, Any, Any, list[tuple[int, ...]]] | None:
        """(cache, input_ids, attention_mask, used keys) for `generate`, in the layout of the module
        docstring; None when no row has a stored prefix (a plain prefill is then as fast)."""
        import torch
        from transformers import DynamicCache

        found = [self.lookup(p) for p in prompts]
        if not any(n for n, _ in found):
            return None
        any_kv = next(kv for n, kv in found if n)
        w_c = max(n for n, _ in found)
        w_s = max(len(p) - n for p, (n, _) in zip(prompts, found))
        rows = len(prompts)
        layers = []
        for layer, (k0, v0) in enumerate(any_kv):
            heads, _, dim = k0.shape
            k = k0.new_zeros((rows, heads, w_c, dim))
            v = v0.new_zeros((rows, heads, w_c, dim))
            for r, (n, kv) in enumerate(found):
                if n:
                    k[r, :, w_c - n:] = kv[layer][0][:, :n]
                    v[r, :, w_c - n:] = kv[layer][1][:, :n]
            layers.append((k, v))
        ids = torch.full((rows, w_c + w_s), pad_id, dtype=torch.long)
        mask = torch.zeros((rows, w_c + w_s), dtype=torch.long)
        for r, (p, (n, _)) in enumerate(zip(prompts, found)):
            mask[r, w_c - n: w_c] = 1
            new = p[n:]
            ids[r, w_c + w_s - len(new):] = torch.tensor(new)
            mask[r, w_c + w_s - len(new):] = 1
        used = [key for key, kv in self.entries.items() if any(kv is f for _, f in found)]
        for key in used:
            self.stamp[key] = self.calls
        self.reused += sum(n for n, _ in found)
        self.fed += sum(len(p) - n for p, (n, _) in zip(prompts, found))
        return DynamicCache(layers), ids, mask, used

    def store(self, cache: Any, mask: Any, tokens: list[list[int]]) -> list[tuple[int, ...]]:
        """Keep each row's KV at the positions `mask` marks (then every position after the mask's width),
        as the prefix `tokens[r]` (only as many positions as it has tokens)."""
        import torch

        width, keys = mask.shape[1], []
        for r, toks in enumerate(tokens):
            valid = torch.nonzero(mask[r], as_tuple=True)[0]
            extra = torch.arange(width, width + max(len(toks) - len(valid), 0))
            idx = torch.cat([valid, extra])[: len(toks)]
            # (advanced indexing copies: the entry does not pin the batch's cache)
            kv = [(layer.keys[r][:, idx], layer.values[r][:, idx]) for layer in cache.layers]
            keys.append(tuple(toks[: len(idx)]))
            self.put(keys[-1], kv)
        return keys
