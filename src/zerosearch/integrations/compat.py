"""Checks for combinations of third-party versions that install fine but fail deep inside an import.

`check_hub_kernels()`: transformers < 5.13 builds its hub-kernel mapping at import
(`transformers/integrations/hub_kernels.py`, module level, whenever `kernels` is importable) with
`LayerRepository(repo_id=..., layer_name=...)` and no `version`/`revision`; kernels >= 0.15 rejects that
(`ValueError: Either a revision or a version must be specified.`), so every transformers model module
(and veRL's agent loop, TRL, peft, ... on top of them) fails to import. `USE_HUB_KERNELS=0` does not help:
that variable is read only by `use_kernel_forward_from_hub`, after the mapping has been built.
transformers 5.13 passes `version=1` (and asks for kernels >= 0.15.2). veRL 0.9.1 caps transformers < 5.11,
so a venv with veRL and a current `kernels` (e.g. from `trl[kernels]` resolved elsewhere, or
`pip install -U kernels`) hits it; the `all` extra pins `kernels<0.15`.

Only distribution metadata is read (no import of transformers or kernels), so calling it is cheap.
"""

from __future__ import annotations

from importlib import metadata

# The first transformers that passes a version to LayerRepository, and the first kernels that requires one
# (checked in the released wheels: transformers 5.12.1 has none, 5.13.0 has version=1; kernels 0.14.1 accepts
# neither, 0.15.1 raises).
TRANSFORMERS_FIXED = (5, 13)
KERNELS_STRICT = (0, 15)


class IncompatibleDependencies(ImportError):
    """Installed versions that are known not to import together."""


def _release(version: str) -> tuple[int, ...]:
    """The numeric release part of a version string ("5.10.4" -> (5, 10, 4), "0.15.0rc1" -> (0, 15, 0))."""
    parts = []
    for piece in version.split("+")[0].split("."):
        digits = ""
        for ch in piece:
            if not ch.isdigit():
                break
            digits += ch
        if not digits:
            break
        parts.append(int(digits))
        if len(digits) < len(piece):  # "0rc1", "13dev0": the pre-release suffix ends the release part
            break
    return tuple(parts)


def _installed(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def check_hub_kernels() -> None:
    """Raise `IncompatibleDependencies` (an ImportError) naming the versions and the remedy when the installed
    transformers and kernels cannot be imported together; do nothing otherwise (or when either is absent)."""
    transformers_version, kernels_version = _installed("transformers"), _installed("kernels")
    if transformers_version is None or kernels_version is None:
        return
    if _release(transformers_version) >= TRANSFORMERS_FIXED or _release(kernels_version) < KERNELS_STRICT:
        return
    pin = _kernels_extra_pin()
    pinned = f" (transformers {transformers_version}'s own [kernels] extra asks for {pin})" if pin else ""
    raise IncompatibleDependencies(
        f"transformers {transformers_version} cannot be imported with kernels {kernels_version}: transformers "
        f"< 5.13 builds its hub-kernel mapping at import with LayerRepository(...) without a version, which "
        f"kernels >= 0.15 rejects ('ValueError: Either a revision or a version must be specified.'), whatever "
        f"USE_HUB_KERNELS says. veRL 0.9.1 caps transformers below 5.11, so keep kernels below 0.15{pinned}: "
        f"pip install 'kernels<0.15', or pip uninstall kernels; `pip install 'zerosearch[all]'` resolves a "
        f"working set."
    )


def _kernels_extra_pin() -> str | None:
    """transformers' own requirement on kernels for its [kernels] extra, e.g. "kernels<0.13,>=0.12.0"."""
    try:
        requires = metadata.requires("transformers") or []
    except metadata.PackageNotFoundError:
        return None
    for req in requires:
        spec, _, marker = req.partition(";")
        if spec.strip().startswith("kernels") and 'extra == "kernels"' in marker:
            return spec.strip()
    return None
