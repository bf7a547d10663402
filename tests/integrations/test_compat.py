"""zerosearch.integrations.compat: the transformers/kernels check, with faked installed versions (no veRL,
no kernels needed: runs in plain `make test`)."""

from __future__ import annotations

import importlib.metadata
import subprocess
import sys

import pytest

from zerosearch.integrations import compat


def fake_versions(monkeypatch: pytest.MonkeyPatch, **versions: str | None) -> None:
    """Make importlib.metadata report these versions (None: not installed); other names as really installed."""
    real_version, real_requires = importlib.metadata.version, importlib.metadata.requires

    def version(name: str) -> str:
        if name in versions:
            if versions[name] is None:
                raise importlib.metadata.PackageNotFoundError(name)
            return versions[name]
        return real_version(name)

    def requires(name: str) -> list[str] | None:
        if name == "transformers":
            return ['kernels<0.13,>=0.12.0; extra == "kernels"', 'kernels<0.13,>=0.12.0; extra == "dev"']
        return real_requires(name)

    monkeypatch.setattr(importlib.metadata, "version", version)
    monkeypatch.setattr(importlib.metadata, "requires", requires)


@pytest.mark.parametrize(
    ("transformers", "kernels"),
    [("5.10.4", "0.19.1"), ("5.10.4", "0.15.1"), ("5.12.1", "0.15.2"), ("5.6.0", "0.16.0rc1")],
)
def test_old_transformers_with_strict_kernels_raises_a_clear_import_error(
    monkeypatch: pytest.MonkeyPatch, transformers: str, kernels: str
) -> None:
    fake_versions(monkeypatch, transformers=transformers, kernels=kernels)
    with pytest.raises(ImportError) as info:
        compat.check_hub_kernels()
    assert isinstance(info.value, compat.IncompatibleDependencies)
    message = str(info.value)
    assert f"transformers {transformers}" in message and f"kernels {kernels}" in message
    assert "pip install 'kernels<0.15'" in message  # the remedy
    assert "Either a revision or a version must be specified" in message  # the error it stands in for
    assert "kernels<0.13,>=0.12.0" in message  # transformers' own pin, read from its metadata


@pytest.mark.parametrize(
    ("transformers", "kernels"),
    [
        ("5.10.4", "0.12.3"),  # what the `all` extra resolves (transformers[kernels]'s own pin)
        ("5.10.4", "0.14.1"),  # the newest kernels that accepts an unversioned LayerRepository
        ("5.13.0", "0.15.2"),  # transformers passes version=1 from 5.13
        ("5.25.0", "0.19.1"),  # .venv-trl
        ("5.13.0.dev0", "0.19.1"),
        ("5.10.4", None),  # kernels not installed: transformers skips the mapping
        (None, "0.19.1"),
    ],
)
def test_compatible_or_absent_versions_pass(
    monkeypatch: pytest.MonkeyPatch, transformers: str | None, kernels: str | None
) -> None:
    fake_versions(monkeypatch, transformers=transformers, kernels=kernels)
    compat.check_hub_kernels()


def test_message_without_transformers_pin(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_versions(monkeypatch, transformers="5.10.4", kernels="0.19.1")
    monkeypatch.setattr(importlib.metadata, "requires", lambda name: [])
    with pytest.raises(compat.IncompatibleDependencies, match=r"kernels below 0\.15: pip install"):
        compat.check_hub_kernels()


def test_release_parsing() -> None:
    assert compat._release("5.10.4") == (5, 10, 4)
    assert compat._release("0.15.0rc1") == (0, 15, 0)
    assert compat._release("5.13.0.dev0") == (5, 13, 0)
    assert compat._release("2.13.0+cpu") == (2, 13, 0)


def test_this_environment_passes_and_the_module_stays_light() -> None:
    """The installed set of whichever venv runs the suite is a working one; importing compat pulls in neither
    transformers nor kernels (a fresh interpreter, so other tests' imports do not count)."""
    compat.check_hub_kernels()
    code = (
        "import sys; import zerosearch.integrations.compat as c; c.check_hub_kernels(); "
        "print(sorted(m for m in ('transformers', 'kernels', 'torch') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
