"""Training checkpoints: written atomically, read back for `--resume`.

    run_dir/checkpoints/step-000050/
        policy.safetensors    trainable policy weights (all of them, or the LoRA adapter's)
        critic.safetensors    PPO's value model
        trainer.pt            optimizer(s), LR scheduler(s), RNG states, step, curriculum, engine state
        config.yaml           the run's config, to refuse resuming under a different one
        manifest.json         size and sha256 of each file above, written last

The directory appears under its final name only once complete (zerosearch.io.atomic_path), so a crash
while saving leaves the previous checkpoint as the latest one, and its half-written `.step-*.tmp` folder
(or a `.step-*.old-*` one, from a crash while replacing a checkpoint) behind. Those are removed the next
time the checkpoints are listed (on `--resume`), unless another process holds `.checkpoints.lock`: a
writer holds it while it saves, so only folders of a writer that is gone count as stale.

Atomic renames cannot protect a checkpoint from what happens to it later (a disk error, a copy cut
short, a stray write): `latest_good_checkpoint` checks each file against the manifest and falls back to
the newest checkpoint that verifies, naming the files that did not. A save that fails for lack of space
raises `CheckpointError` saying so, and leaves the previous checkpoint as it was.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import random
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from zerosearch.io import atomic_path, atomic_write_text


def _trainable_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    # Frozen weights (a LoRA base) are rebuilt from the model name; only what training changes is saved.
    names = {n for n, p in model.named_parameters() if p.requires_grad}
    return {n: t.detach().cpu().contiguous() for n, t in model.state_dict().items() if n in names}


def rng_state() -> dict[str, Any]:
    state = {"python": random.getstate(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


MANIFEST = "manifest.json"


class CheckpointError(RuntimeError):
    """A checkpoint could not be written or read back; the message names the folder or file."""


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def write_manifest(folder: Path) -> None:
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.name != MANIFEST)
    atomic_write_text(folder / MANIFEST, json.dumps(
        {p.name: {"bytes": p.stat().st_size, "sha256": _sha256(p)} for p in files}, indent=1) + "\n")


def verify_checkpoint(ckpt: Path) -> str | None:
    """None if every file matches the manifest; else what is wrong, naming the file. A checkpoint from
    before manifests existed (no manifest.json) is accepted as it is."""
    path = ckpt / MANIFEST
    if not path.is_file():
        return None
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        return f"{path}: unreadable manifest ({e})"
    for name, want in sorted(manifest.items()):
        f = ckpt / name
        if not f.is_file():
            return f"{f}: missing"
        size = f.stat().st_size
        if size != want["bytes"]:
            return f"{f}: {size:,} bytes, the manifest says {want['bytes']:,} (truncated?)"
        if _sha256(f) != want["sha256"]:
            return f"{f}: sha256 differs from the manifest's (corrupted)"
    return None


def latest_good_checkpoint(run_dir: Path) -> tuple[Path | None, list[str]]:
    """The newest checkpoint whose files verify, and one line per newer one skipped (what was wrong)."""
    skipped = []
    for ckpt in reversed(list_checkpoints(run_dir)):
        problem = verify_checkpoint(ckpt)
        if problem is None:
            return ckpt, skipped
        skipped.append(f"{ckpt.name} skipped: {problem}")
    return None, skipped


def save_checkpoint(run_dir: Path, step: int, *, policy: torch.nn.Module, critic: torch.nn.Module | None,
                    trainer_state: dict[str, Any], config_yaml: str, keep: int = 2) -> Path:
    from safetensors.torch import save_file

    ckpt = run_dir / "checkpoints" / f"step-{step:06d}"
    with _writer_lock(run_dir, wait=True):
        previous = [p.name for p in list_checkpoints(run_dir)]
        try:
            with atomic_path(ckpt, is_dir=True) as tmp:
                save_file(_trainable_state(policy), str(tmp / "policy.safetensors"))
                if critic is not None:
                    save_file(_trainable_state(critic), str(tmp / "critic.safetensors"))
                torch.save({"step": step, **trainer_state}, tmp / "trainer.pt")
                atomic_write_text(tmp / "config.yaml", config_yaml)
                write_manifest(tmp)
        except Exception as e:
            # safetensors (SafetensorError, not an OSError) and torch.save (RuntimeError) report a full disk
            # in their own types: the errno or the message says what it was
            full = getattr(e, "errno", None) in (errno.ENOSPC, errno.EDQUOT) or "No space left" in str(e) or \
                "os error 28" in str(e)
            if not full:
                raise
            raise CheckpointError(
                f"checkpoint {ckpt} not written: no space left on the device ({e}); nothing of it was kept, and "
                f"the previous checkpoint ({previous[-1] if previous else 'none'}) is intact") from e
    for old in list_checkpoints(run_dir)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return ckpt


@contextlib.contextmanager
def _writer_lock(run_dir: Path, *, wait: bool) -> Iterator[bool]:
    """Hold `run_dir/.checkpoints.lock` (flock; released by the kernel if the process dies; beside, not in,
    checkpoints/, which holds checkpoints only). Yields whether it was taken: with `wait=False` it is not
    when another process is saving a checkpoint right now."""
    run_dir.mkdir(parents=True, exist_ok=True)
    with open(run_dir / ".checkpoints.lock", "a") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def remove_stale_partials(run_dir: Path) -> list[Path]:
    """Delete the `.step-*.tmp` / `.step-*.old-*` folders a crashed save left; returns what was removed."""
    root = run_dir / "checkpoints"
    if not root.is_dir():
        return []
    with _writer_lock(run_dir, wait=False) as free:
        if not free:  # a save is in progress: its temporary folder is not stale
            return []
        stale = sorted(p for pattern in (".step-*.tmp", ".step-*.old-*") for p in root.glob(pattern) if p.is_dir())
        for p in stale:
            shutil.rmtree(p, ignore_errors=True)
    return stale


def list_checkpoints(run_dir: Path) -> list[Path]:
    """Complete checkpoints, oldest first; stale partial folders from a crashed save are removed first."""
    root = run_dir / "checkpoints"
    if not root.is_dir():
        return []
    remove_stale_partials(run_dir)
    return sorted(p for p in root.glob("step-*") if p.is_dir() and (p / "trainer.pt").is_file())


def load_checkpoint(ckpt: Path, *, policy: torch.nn.Module, critic: torch.nn.Module | None) -> dict[str, Any]:
    """Load weights into `policy`/`critic` in place and return the trainer state (step, optimizers, ...)."""
    from safetensors.torch import load_file

    for model, name in ((policy, "policy"), (critic, "critic")):
        if model is None:
            continue
        saved = load_file(str(ckpt / f"{name}.safetensors"))
        expected = set(_trainable_state(model))
        if set(saved) != expected:
            raise ValueError(f"{ckpt / (name + '.safetensors')}: its weights do not match this {name} "
                             f"({len(set(saved) ^ expected)} names differ); was it saved by another config?")
        model.load_state_dict(saved, strict=False)
    return torch.load(ckpt / "trainer.pt", weights_only=False)
