"""The package layout mirrors the method, and keeps to it: lower layers never import higher ones (lazy imports
inside functions included), no module-level import cycles, every module readable in one sitting."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "zerosearch"

# Bottom to top. A module may import its own layer and the ones below; `zerosearch` itself (the version) is
# importable from anywhere.
LAYERS: list[set[str]] = [
    {"io", "reward", "prompts", "models", "algorithms"},  # shared: files, the reward's maths, the policy's text
    {"data"},  # QA records, the synthetic world, search plans
    {"engines"},  # real and simulated search engines, their cache and server
    {"agent"},  # the multi-turn rollout and where its tokens come from
    {"evaluation"},  # EM, the protocol, hops, paired statistics
    {"training", "simulator"},  # the RL loop and the cold start; the simulator's tuning and judge
    {"integrations", "viewer", "demo"},  # TRL/veRL, the trajectory viewer, the end-to-end demo
    {"cli", "__main__"},
]
MAX_MODULE_LINES, MAX_CLASS_LINES = 450, 200


def _modules() -> dict[str, Path]:
    return {".".join(p.relative_to(SRC.parent).with_suffix("").parts).removesuffix(".__init__"): p
            for p in sorted(SRC.rglob("*.py"))}


def _layer(module: str) -> int:
    part = module.split(".")[1] if "." in module else ""
    for i, names in enumerate(LAYERS):
        if part in names:
            return i
    raise AssertionError(f"{module}: its subpackage {part!r} has no layer in tests/test_layout.py LAYERS")


def _imports(path: Path, *, top_level_only: bool) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    out: set[str] = set()
    for node in nodes:
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module and node.module.startswith("zerosearch"):
            # `from zerosearch.x import y`: y may itself be a module
            out.add(node.module)
            out.update(f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name.startswith("zerosearch"))
    return out


def test_every_subpackage_has_a_layer() -> None:
    for module in _modules():
        if module != "zerosearch":
            _layer(module)


def test_lower_layers_never_import_higher_ones() -> None:
    mods = _modules()
    bad = []
    for module, path in mods.items():
        if module == "zerosearch":
            continue
        for target in _imports(path, top_level_only=False):
            target = target if target in mods else target.rsplit(".", 1)[0]  # `from m import name`
            if target == "zerosearch" or target not in mods:
                continue
            if _layer(target) > _layer(module):
                bad.append(f"{module} imports {target}")
    assert not bad, "\n".join(sorted(set(bad)))


def test_no_module_level_import_cycles() -> None:
    mods = _modules()
    graph = {m: {t for t in _imports(p, top_level_only=True) if t in mods and t != m} for m, p in mods.items()}
    state: dict[str, int] = {}
    cycle: list[str] = []

    def visit(m: str, stack: list[str]) -> bool:
        state[m] = 1
        for t in sorted(graph[m]):
            if state.get(t) == 1:
                cycle.extend([*stack[stack.index(t):], t])
                return True
            if t not in state and visit(t, [*stack, t]):
                return True
        state[m] = 2
        return False

    for m in sorted(graph):
        if m not in state and visit(m, [m]):
            break
    assert not cycle, " -> ".join(cycle)


@pytest.mark.parametrize("path", sorted(SRC.rglob("*.py")), ids=lambda p: str(p.relative_to(SRC)))
def test_module_and_class_sizes(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    lines = text.count("\n")
    assert lines <= MAX_MODULE_LINES, f"{path.relative_to(SRC)}: {lines} lines > {MAX_MODULE_LINES}"
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.ClassDef):
            n = node.end_lineno - node.lineno + 1  # type: ignore[operator]
            assert n <= MAX_CLASS_LINES, f"{path.relative_to(SRC)}: class {node.name} is {n} lines > {MAX_CLASS_LINES}"
