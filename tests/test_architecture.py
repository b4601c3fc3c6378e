"""The headless package's shape (docs/architecture.md): packages by concept, a few shared modules at the root, and no
import cycle between its modules (imports inside functions count; typing-only imports do not)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE, FOLDER = "medlsam_training", ROOT / "training"


def modules() -> dict[str, tuple[Path, list[str]]]:
    """Dotted name -> (file, the package its relative imports start from)."""
    out = {}
    for path in FOLDER.rglob("*.py"):
        parts = [PACKAGE, *path.relative_to(FOLDER).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts = parts[:-1]
            out[".".join(parts)] = (path, parts)
        else:
            out[".".join(parts)] = (path, parts[:-1])
    return out


def imports(path: Path, package: list[str], known: set[str]) -> set[str]:
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
            node.body = []  # annotations only: never imported at run time
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            base = ".".join(package[: len(package) - node.level + 1] + ([node.module] if node.module else [])) \
                if node.level else (node.module or "")
            for alias in node.names:
                name = f"{base}.{alias.name}"
                found.add(name if name in known else base)
        elif isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
    return found & known


def test_the_root_holds_only_shared_modules() -> None:
    root = sorted(p.stem for p in FOLDER.glob("*.py") if p.stem != "__init__")
    assert len(root) <= 12, root
    assert {"options", "errors", "progress", "metrics"} <= set(root)


def test_no_import_cycle() -> None:
    mods = modules()
    graph = {name: imports(path, package, set(mods)) - {name} for name, (path, package) in mods.items()}
    # a module reached again on the path that left it is a cycle
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    cycles = []

    def visit(name: str, path: list[str]) -> None:
        state[name] = 1
        for other in sorted(graph[name]):
            if state.get(other) == 1:
                cycles.append(path[path.index(other):] + [other])
            elif other not in state:
                visit(other, path + [other])
        state[name] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    assert not cycles, cycles
