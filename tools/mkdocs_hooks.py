"""MkDocs hooks for `make docs` (mkdocs.yml `hooks:`).

One narrow exception to `--strict`: Python-Markdown reads a subscript written in a docstring outside
backticks, such as raw["a"]["b"], as a reference link, and mkdocs-autorefs then warns that it cannot find
the cross-reference target '"b"'. Such a target is not a Python name, so it cannot be a cross-reference
anyone meant; the warning is lowered to INFO. A target that is a dotted Python name (`zerosearch.x.y`, a
real cross-reference that does not resolve) still warns and fails the strict build, as does every broken
link in the pages themselves. Should mkdocs-autorefs rename its logger, the filter stops matching and the
warning fails the build again: it fails safe.
"""

from __future__ import annotations

import logging
import re

_UNRESOLVED = re.compile(r"from \S+\.py:\d+: .*Could not find cross-reference target '(?P<target>.*)'$")
_PYTHON_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")


class _NotACrossReference(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno == logging.WARNING:
            m = _UNRESOLVED.search(record.getMessage())
            if m and not _PYTHON_NAME.match(m.group("target")):
                record.levelno, record.levelname = logging.INFO, "INFO"
        return True


def on_startup(command: str, dirty: bool) -> None:
    logger = logging.getLogger("mkdocs.plugins.mkdocs_autorefs._internal.plugin")
    if not any(isinstance(f, _NotACrossReference) for f in logger.filters):
        logger.addFilter(_NotACrossReference())
