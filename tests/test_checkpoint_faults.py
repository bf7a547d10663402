"""Checkpoints under the faults that happen: a file truncated or corrupted after it was written, a disk that
fills up during a save. Resume must detect the damage, name the file, and fall back to a good checkpoint;
a full disk must leave the previous checkpoint intact and say what happened."""

from __future__ import annotations

import errno
import os
import subprocess
from pathlib import Path

import pytest
import torch

from zerosearch.training.checkpoint import (CheckpointError, latest_good_checkpoint, list_checkpoints,
                                            load_checkpoint, save_checkpoint, verify_checkpoint)


def _save(run: Path, step: int, value: float, **kw) -> Path:
    torch.manual_seed(step)
    policy = torch.nn.Linear(64, 64)
    with torch.no_grad():
        policy.weight.fill_(value)
    return save_checkpoint(run, step, policy=policy, critic=None, trainer_state={"optimizers": []},
                           config_yaml="model: x\n", **kw)


def test_a_fresh_checkpoint_verifies_and_loads(tmp_path: Path) -> None:
    ckpt = _save(tmp_path, 1, 0.5)
    assert (ckpt / "manifest.json").is_file() and verify_checkpoint(ckpt) is None
    policy = torch.nn.Linear(64, 64)
    state = load_checkpoint(ckpt, policy=policy, critic=None)
    assert state["step"] == 1 and torch.all(policy.weight == 0.5)


def test_truncated_file_is_named_and_resume_falls_back(tmp_path: Path) -> None:
    first, second = _save(tmp_path, 1, 0.5), _save(tmp_path, 2, 0.25)
    weights = second / "policy.safetensors"
    size = weights.stat().st_size
    with open(weights, "r+b") as f:
        f.truncate(size // 2)
    problem = verify_checkpoint(second)
    assert problem is not None and "policy.safetensors" in problem and "truncated" in problem
    good, skipped = latest_good_checkpoint(tmp_path)
    assert good == first
    assert len(skipped) == 1 and skipped[0].startswith("step-000002 skipped") and "policy.safetensors" in skipped[0]


def test_flipped_byte_of_same_size_is_caught(tmp_path: Path) -> None:
    ckpt = _save(tmp_path, 1, 0.5)
    path = ckpt / "trainer.pt"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    problem = verify_checkpoint(ckpt)
    assert problem is not None and "trainer.pt" in problem and "sha256" in problem
    assert latest_good_checkpoint(tmp_path) == (None, [f"step-000001 skipped: {problem}"])


def test_missing_file_and_bad_manifest(tmp_path: Path) -> None:
    ckpt = _save(tmp_path, 1, 0.5)
    (ckpt / "config.yaml").unlink()
    assert "config.yaml: missing" in (verify_checkpoint(ckpt) or "")
    (ckpt / "manifest.json").write_text("{not json", encoding="utf-8")
    assert "unreadable manifest" in (verify_checkpoint(ckpt) or "")


def test_checkpoint_without_manifest_is_accepted(tmp_path: Path) -> None:
    ckpt = _save(tmp_path, 1, 0.5)  # a checkpoint written before manifests existed
    (ckpt / "manifest.json").unlink()
    assert verify_checkpoint(ckpt) is None and latest_good_checkpoint(tmp_path) == (ckpt, [])


def test_disk_full_during_save_keeps_the_previous_checkpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first = _save(tmp_path, 1, 0.5)
    import safetensors.torch

    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(safetensors.torch, "save_file", full)
    with pytest.raises(CheckpointError, match=r"step-000002 not written: no space left.*step-000001\) is intact"):
        _save(tmp_path, 2, 0.25)
    assert list_checkpoints(tmp_path) == [first] and verify_checkpoint(first) is None
    assert not any(p.name.endswith(".tmp") for p in (tmp_path / "checkpoints").iterdir())


def test_other_errors_are_not_called_a_full_disk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import safetensors.torch

    monkeypatch.setattr(safetensors.torch, "save_file", lambda *a, **k: (_ for _ in ()).throw(PermissionError("denied")))
    with pytest.raises(PermissionError):
        _save(tmp_path, 1, 0.5)


@pytest.fixture
def small_tmpfs(tmp_path: Path):
    """A real 1 MiB tmpfs, where this machine lets us mount one (root, Linux); skipped elsewhere."""
    mnt = tmp_path / "tmpfs"
    mnt.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)],
                                           capture_output=True).returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root on Linux); the monkeypatched disk-full test covers the logic")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def test_a_really_full_disk(small_tmpfs: Path) -> None:
    # one 64x64 checkpoint is ~17 KB; a 1 MiB device filled by a ballast file has no room for the next
    first = _save(small_tmpfs, 1, 0.5)
    ballast = small_tmpfs / "ballast"
    try:
        with open(ballast, "wb") as f:
            while True:
                f.write(b"\0" * 4096)
                f.flush()
    except OSError as e:
        assert e.errno == errno.ENOSPC
    with pytest.raises(CheckpointError, match="no space left"):
        _save(small_tmpfs, 2, 0.25)
    ballast.unlink()
    assert list_checkpoints(small_tmpfs) == [first] and verify_checkpoint(first) is None
