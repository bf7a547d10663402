"""TRL is an optional extra (`pip install zerosearch[trl]`): the package imports without it, and everything
that needs it calls `_require_trl()` first."""

from __future__ import annotations

from zerosearch.integrations.compat import check_hub_kernels

# Before `import trl`: a transformers/kernels pair that cannot import together would otherwise fail deep inside
# transformers (or, caught below, pass for a missing TRL); this names both versions and the remedy.
check_hub_kernels()

try:  # TRL is an optional extra; everything that needs it checks `_require_trl()`
    import trl
    from transformers import TrainerCallback
except ImportError:  # pragma: no cover - exercised where trl is absent
    trl = None
    TrainerCallback = object  # type: ignore[assignment,misc]


def _require_trl() -> None:
    if trl is None:
        raise ImportError("zerosearch.integrations.trl needs TRL: pip install 'zerosearch[trl]' (trl>=1.16, "
                          "Python >= 3.11)")
