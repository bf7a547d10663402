"""The documentation against the code: the generated configuration reference is current and complete, and
every `zerosearch <verb> --flag ...` the README and docs/ show is a verb and flags the CLI accepts."""

from __future__ import annotations

import difflib
import importlib.util
import re
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _generator():
    """tools/gen_config_reference.py (a script, not a package), imported once."""
    if "gen_config_reference" not in sys.modules:
        path = ROOT / "tools" / "gen_config_reference.py"
        spec = importlib.util.spec_from_file_location("gen_config_reference", path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module  # its dataclasses look their module up
        spec.loader.exec_module(module)
    return sys.modules["gen_config_reference"]


# --- the configuration reference (tools/gen_config_reference.py) ---------------------------------------


def test_config_reference_is_current():
    gen = _generator()
    page = gen.PAGE
    assert page.is_file(), f"{page.relative_to(ROOT)} is missing: run .venv/bin/python tools/gen_config_reference.py"
    current, expected = page.read_text(encoding="utf-8"), gen.render()
    if current != expected:
        diff = "".join(list(difflib.unified_diff(current.splitlines(True), expected.splitlines(True),
                                                 "on disk", "generated", n=0))[:40])
        pytest.fail(f"{page.relative_to(ROOT)} is stale: run .venv/bin/python tools/gen_config_reference.py\n{diff}")


def test_config_reference_names_every_key_with_a_meaning():
    gen = _generator()
    text = gen.PAGE.read_text(encoding="utf-8")
    rows = {m.group(1): m.group(2) for m in re.finditer(r"^\| `([\w.]+)` \|.*\| ([^|]*) \|$", text, re.M)}
    keys = gen.all_train_config_keys()
    assert len(keys) > 80 and {"optim.lr", "train.steps", "engine.k", "monitor.patience", "eval_engine"} <= set(keys)
    missing = [k for k in keys if k not in rows]
    assert not missing, f"keys missing from {gen.PAGE.relative_to(ROOT)}: {missing}"
    undescribed = [k for k in keys if rows[k].strip() in ("", "—")]
    assert not undescribed, f"keys without a meaning: {undescribed}"


# --- every documented command exists -------------------------------------------------------------------

_FENCE = re.compile(r"^\s*(`{3,}|~{3,})\s*([\w+-]*)")
_SHELL_FENCES = {"", "bash", "sh", "shell", "console", "zsh", "text"}
_INLINE = re.compile(r"(?<!`)(`+)(?!`)(.+?)(?<!`)\1(?!`)", re.S)
_PLACEHOLDER = re.compile(r"<[^<>\s][^<>]*>")
_OPERATORS = {"|", "||", "&&", ";", "&", "(", ")", ";;", "|&"}
_REDIRECTS = {">", ">>", "<", ">&", "<&", "&>", "&>>", "<<<"}


@dataclass(frozen=True)
class Command:
    file: str
    line: int
    argv: tuple[str, ...]  # verb + arguments, as the shell would pass them


def _strip_comment(line: str) -> str:
    """The line without a shell comment (`#` at the start of a word, outside quotes)."""
    quote = None
    for i, ch in enumerate(line):
        if quote:
            if ch == quote:
                quote = None
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i].rstrip()
    return line


_WRAPPER = re.compile(r"^(\w+=\S*|env|nice|time|sudo|timeout|-n|-k|\d+[smh]?)$")


def _commands_in(snippet: str, file: str, line: int) -> list[Command]:
    """The zerosearch commands in one shell command line (pipes, &&, ; split it)."""
    text = _PLACEHOLDER.sub("PLACEHOLDER", snippet)
    try:
        lex = shlex.shlex(text, posix=True, punctuation_chars=True)
        lex.whitespace_split = True
        tokens = list(lex)
    except ValueError:  # an unbalanced quote: not a shell command (prose in a code span)
        return []
    segments: list[list[str]] = [[]]
    skip_next = False
    for tok in tokens:
        if skip_next:
            skip_next = False
        elif tok in _OPERATORS:
            segments.append([])
        elif tok in _REDIRECTS:
            skip_next = True  # the redirect's file
        else:
            segments[-1].append(tok)
    out = []
    for seg in segments:
        for i, tok in enumerate(seg):
            # the program of its segment (after VAR=value and wrappers such as `nice -n 10`), not a word of
            # output or prose ("imported 115 zerosearch modules")
            exe = (tok == "zerosearch" or tok.endswith("/zerosearch")) and all(_WRAPPER.match(t) for t in seg[:i])
            module = tok in ("zerosearch", "zerosearch.cli") and i > 0 and seg[i - 1] == "-m"
            if exe or module:
                argv = tuple(seg[i + 1:])
                if argv:
                    out.append(Command(file, line, argv))
                break
    return out


def extract_commands(markdown: str, file: str = "<string>") -> list[Command]:
    """Every `zerosearch ...` command in a Markdown text: the lines of its shell code blocks (`\\` line
    continuations joined, comments and `$ ` prompts dropped) and its inline code spans that run
    `zerosearch` (or `python -m zerosearch`). Other code blocks (yaml, python, ...) and prose are not commands."""
    found: list[Command] = []
    lines = markdown.splitlines()
    prose: list[str] = []  # the lines outside code blocks (blanked inside), for the inline spans
    fence, lang = None, ""
    pending, pending_line = "", 0
    for n, raw in enumerate(lines, 1):
        m = _FENCE.match(raw)
        if fence is None:
            if m:
                fence, lang = m.group(1), m.group(2).lower()
                prose.append("")
            else:
                prose.append(raw)
            continue
        prose.append("")
        if m and m.group(1).startswith(fence[0]) and len(m.group(1)) >= len(fence) and not m.group(2):
            if pending:
                found += _commands_in(pending, file, pending_line)
            fence, pending = None, ""
            continue
        if lang not in _SHELL_FENCES:
            continue
        line = _strip_comment(raw.strip().removeprefix("$ "))
        if not pending:
            pending_line = n
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        pending += line
        found += _commands_in(pending, file, pending_line)
        pending = ""
    text = "\n".join(_strip_html_comments(prose))
    for m in _INLINE.finditer(text):
        code = m.group(2)
        if "\n\n" in code:
            continue
        code = " ".join(code.replace("\\|", "|").split())
        if re.search(r"(?:^|[\s/])zerosearch\s", code):  # `zerosearch ...`, `python -m zerosearch ...`
            found += _commands_in(code, file, text.count("\n", 0, m.start()) + 1)
    return sorted(found, key=lambda c: c.line)


def _strip_html_comments(lines: list[str]) -> list[str]:
    """The lines with `<!-- ... -->` blanked (line count kept)."""
    text = re.sub(r"<!--.*?-->", lambda m: "\n" * m.group(0).count("\n"), "\n".join(lines), flags=re.S)
    return text.split("\n")


def _parser():
    from zerosearch.cli import build_parser

    return build_parser()


def check_command(cmd: Command, parser) -> list[str]:
    """What is wrong with `cmd` for the CLI `parser` (an empty list: nothing)."""
    verbs = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction").choices
    verb, *args = cmd.argv
    where = f"{cmd.file}:{cmd.line}: `zerosearch {shlex.join(cmd.argv)}`"
    if verb.startswith("-"):
        options, args, shown = set(parser._option_string_actions), [verb, *args], "zerosearch"
    elif verb == "PLACEHOLDER":  # `zerosearch <command> --help`: a flag every verb has
        options = set.intersection(*(set(p._option_string_actions) for p in verbs.values()))
        shown = "every zerosearch verb"
    elif verb not in verbs:
        close = difflib.get_close_matches(verb, verbs, n=1)
        return [f"{where}: unknown verb {verb!r}" + (f" (did you mean {close[0]!r}?)" if close else "")]
    else:
        options, shown = set(verbs[verb]._option_string_actions), f"zerosearch {verb}"
    problems = []
    for arg in args:
        if arg == "--":
            break
        arg = arg.strip("[]")
        if not re.match(r"^--?[A-Za-z]", arg):
            continue
        flag = arg.split("=", 1)[0]
        if flag not in options:
            close = difflib.get_close_matches(flag, sorted(options), n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            problems.append(f"{where}: `{shown}` has no flag {flag}{hint}")
    return problems


def documented_files() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


def test_documented_commands_exist():
    parser = _parser()
    commands = [c for path in documented_files() if path.is_file()
                for c in extract_commands(path.read_text(encoding="utf-8"), str(path.relative_to(ROOT)))]
    assert len(commands) >= 20, f"only {len(commands)} zerosearch commands in README.md and docs/: extractor broken?"
    assert {c.argv[0] for c in commands} >= {"train", "eval", "search", "serve"}
    problems = [p for c in commands for p in check_command(c, parser)]
    assert not problems, f"{len(problems)} documented command(s) the CLI does not accept:\n" + "\n".join(problems)


SAMPLE = """\
# A page

Run `zerosearch search "a query" --engine bm25 --k 3` to search; `zerosearch.engines` is a module, and
`pip install 'zerosearch[dense]'` is not a command. Inline `zerosearch eval --modle M` is misspelt;
`python -m zerosearch serve --engine bm25` is a command too, and so is `zerosearch <verb> --help`.

```bash
zerosearch train --config configs/tiny-grpo.yaml train.steps=20 --out=runs/x   # a comment --bogus
zerosearch search "q" --engine simulated --question "Q?" \\
    --answer A --not-a-flag | head -3 && zerosearch frobnicate --out x
HF_HUB_OFFLINE=1 .venv/bin/zerosearch eval --model <dir> --data <qa.jsonl> --out runs/e > log.txt
```

```python
from zerosearch import train  # not a shell block
```

```
imported 115 zerosearch modules
```

```yaml
engine: {name: bm25}
```
"""


def test_extract_commands_on_a_hand_made_page():
    commands = extract_commands(SAMPLE, "page.md")
    assert [(c.line, c.argv[0]) for c in commands] == [
        (3, "search"), (4, "eval"), (5, "serve"), (5, "PLACEHOLDER"), (8, "train"), (9, "search"), (9, "frobnicate"), (11, "eval")]
    train = commands[4]
    assert train.argv == ("train", "--config", "configs/tiny-grpo.yaml", "train.steps=20", "--out=runs/x")
    continued = commands[5]
    assert continued.argv[-2:] == ("A", "--not-a-flag") and "head" not in continued.argv
    assert commands[7].argv == ("eval", "--model", "PLACEHOLDER", "--data", "PLACEHOLDER", "--out", "runs/e")

    parser = _parser()
    problems = [p for c in commands for p in check_command(c, parser)]
    assert problems == [
        "page.md:4: `zerosearch eval --modle M`: `zerosearch eval` has no flag --modle (did you mean --model?)",
        "page.md:9: `zerosearch search q --engine simulated --question 'Q?' --answer A --not-a-flag`: "
        "`zerosearch search` has no flag --not-a-flag",
        "page.md:9: `zerosearch frobnicate --out x`: unknown verb 'frobnicate'",
    ]
