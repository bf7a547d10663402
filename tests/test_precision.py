"""optim.precision=bf16 (zerosearch.agent.precision): every forward pass of a step runs under bf16 autocast while
weights, gradients and optimizer state stay fp32; it is refused where bf16 is not native; the simulator's
weights can be bf16 (engine.dtype). That it still learns: test_trainer's learning-direction test, bf16 case."""

from __future__ import annotations

import pytest
import torch

from zerosearch.agent import precision
from zerosearch.agent.rollout import collate, compute_logprobs, rollout
from zerosearch.training.trainer import Trainer

from test_trainer import DocsEngine, make_cfg

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"  # where the trainer puts the model (model.device=auto)
native = pytest.mark.skipif(not precision.bf16_native(DEVICE), reason=f"no native bf16 on {DEVICE}")


def test_check_refuses_bf16_without_native_support_and_unknown_names(monkeypatch: pytest.MonkeyPatch) -> None:
    precision.check("fp32", "cpu")
    with pytest.raises(ValueError, match="optim.precision must be one of fp32, bf16"):
        precision.check("fp16", "cpu")
    monkeypatch.setattr(precision, "bf16_native", lambda device="cpu": False)
    with pytest.raises(ValueError, match="optim.precision=bf16 needs native bf16 on cpu"):
        precision.check("bf16", "cpu")


def test_the_trainer_refuses_bf16_where_it_would_be_emulated(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(precision, "bf16_native", lambda device="cpu": False)
    with pytest.raises(ValueError, match="needs native bf16"):
        Trainer(make_cfg(tmp_path, "optim.precision=bf16", "train.eval_every=0"), tmp_path / "run",
                progress=False, engine=DocsEngine())


def test_fp32_runs_no_autocast() -> None:
    with precision.autocast("fp32", "cpu"):
        assert not torch.is_autocast_enabled("cpu")
    with precision.autocast("bf16", "cpu"):
        assert torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16


@native
def test_bf16_step_computes_in_bf16_and_keeps_fp32_weights_and_optimizer_state(tmp_path) -> None:
    trainer = Trainer(make_cfg(tmp_path, "optim.precision=bf16", "train.eval_every=0", "optim.reuse_kv_cache=true",
                               "optim.reuse_sampler_logprobs=true", "optim.sort_by_length=true"),
                      tmp_path / "run", progress=False, engine=DocsEngine())
    seen: list[torch.dtype] = []
    proj = trainer.policy.model.layers[0].self_attn.q_proj
    hook = proj.register_forward_hook(lambda mod, args, out: seen.append(out.dtype))
    ro = rollout(trainer.batch_records(1), trainer.backend, trainer.tok, trainer.engine, trainer.rollout_cfg)
    assert seen and set(seen) == {torch.bfloat16}  # generation (KV reuse included)
    seen.clear()
    metrics = trainer.step(1)
    hook.remove()
    assert metrics["skipped"] == 0 and torch.isfinite(torch.tensor(metrics["pg_loss"]))
    assert torch.bfloat16 in seen and torch.float32 not in seen  # rollout, reference and update forwards
    assert all(p.dtype == torch.float32 for p in trainer.policy.parameters())
    assert all(v.dtype == torch.float32 for s in trainer.opt.state.values() for v in s.values() if v.dim())
    # bf16 moves the log-probs by rounding, not more: close to fp32's on the same tokens, yet not equal
    batch = collate(ro, trainer.tok.pad_token_id)
    fp32 = compute_logprobs(trainer.policy, batch)
    with precision.autocast("bf16", DEVICE):
        bf16 = compute_logprobs(trainer.policy, batch)
    m = batch["response_mask"].bool()
    err = (fp32[m] - bf16[m]).abs()
    assert 0 < float(err.max()) < 0.5 and float(err.mean()) < 0.1
    trainer.close()


def test_the_simulators_weights_can_be_bf16_and_its_identity_says_so() -> None:
    from zerosearch.engines import EngineConfig, build_engine

    fp32 = build_engine(EngineConfig(name="simulated", model="tiny-random", max_new_tokens=8, dtype="float32"))
    bf16 = build_engine(EngineConfig(name="simulated", model="tiny-random", max_new_tokens=8, dtype="bfloat16"))
    assert next(bf16.backend.model.parameters()).dtype == torch.bfloat16
    assert "dtype=bfloat16" in bf16.identity() and "dtype" not in fp32.identity()
    with pytest.raises(ValueError):
        EngineConfig(name="simulated", dtype="int8")  # type: ignore[arg-type]
    fp32.close()
    bf16.close()


def test_auto_is_bf16_exactly_where_it_is_native(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    """The demo's default: bf16 where native, fp32 elsewhere; explicit choices pass through."""
    from zerosearch.demo import DemoConfig, grpo_config

    assert DemoConfig().precision == "auto"
    for native, want in ((True, "bf16"), (False, "fp32")):
        monkeypatch.setattr(precision, "bf16_native", lambda device=None, n=native: n)
        assert precision.resolve("auto", "cpu") == want
        assert precision.resolve("fp32", "cpu") == "fp32" and precision.resolve("bf16", "cpu") == "bf16"
        cfg = grpo_config(DemoConfig(), "tiny-random", tmp_path)
        assert cfg["optim"]["precision"] == want
        assert cfg["engine"]["dtype"] == ("bfloat16" if native else "auto")
