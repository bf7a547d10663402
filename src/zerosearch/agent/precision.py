"""Mixed precision for the trainer's forward passes: bf16 autocast where the hardware computes bf16 natively.

`optim.precision: bf16` runs every forward pass of a training step (the policy's generation, the
reference's log-probs, the update's forward) under `torch.autocast(dtype=bfloat16)`: matrix products in
bf16, reductions (softmax, norms, the loss) in fp32. Weights, gradients and AdamW's state stay fp32, so
small updates are not rounded away as they would be in pure-bf16 weights. This is the mixed precision
that veRL and TRL train with on GPUs.

It changes the numbers: bf16 keeps 8 bits of mantissa, so log-probs move by ~0.04 on average (0.66 at
most, measured) and sampled tokens can differ from an fp32 run (bench/step.py measures both). On a CPU it
only pays where bf16 is native (AVX512-BF16 or AMX: a bf16 dot product per instruction); elsewhere the CPU
emulates it, slower than fp32, so the trainer refuses it there.
"""

from __future__ import annotations

import contextlib
from typing import Any

PRECISIONS = ("fp32", "bf16")


def bf16_native(device: Any = "cpu") -> bool:
    """Whether `device` computes bf16 matrix products natively (fast), not by emulation."""
    import torch

    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if device.type != "cpu":
        return False
    try:  # oneDNN's own test: AVX512-BF16 or AMX-BF16 present
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def resolve(precision: str, device: Any = None) -> str:
    """"auto" -> "bf16" where `device` (default: CUDA when present, else the CPU, as the trainer picks)
    computes bf16 natively, else "fp32"; any other value unchanged."""
    if precision != "auto":
        return precision
    import torch

    return "bf16" if bf16_native(device or ("cuda" if torch.cuda.is_available() else "cpu")) else "fp32"


def check(precision: str, device: Any) -> None:
    """Refuse a precision this device cannot run fast, with the reason."""
    if precision not in PRECISIONS:
        raise ValueError(f"optim.precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision == "bf16" and not bf16_native(device):
        raise ValueError(f"optim.precision=bf16 needs native bf16 on {device} (AVX512-BF16 or AMX on a CPU, "
                         "a bf16-capable GPU); without it bf16 is emulated and slower than fp32: use fp32")


def autocast(precision: str, device: Any) -> Any:
    """The context every forward pass of a step runs in: bf16 autocast, or nothing for fp32.
    Backward passes run outside it (autocast records each op's dtype for the backward)."""
    if precision == "fp32":
        return contextlib.nullcontext()
    import torch

    return torch.autocast(device_type=torch.device(device).type, dtype=torch.bfloat16)
