"""Imports run downwards only, the layers of docs/design.md: every import of a project module (at the top of a file
or inside a function) goes to a lower layer or stays within its own; data and networks know nothing of each other."""
import ast
from pathlib import Path

from conftest import REPO

# lowest first; one rank may hold groups that must not import each other (data and networks)
LAYERS = {"base": 0, "architectures": 1, "data": 1, "core": 2, "explanations": 3, "aux": 4, "api": 5, "scripts": 6,
          "bench": 7}
PACKAGES = {"base", "architectures", "readers", "core", "explanations", "bench"}


def group(path: Path, root: Path) -> str:
    parts = path.relative_to(root).parts
    if parts[0] == "readers" or parts == ("datasets.py",):
        return "data"
    if parts[0] in PACKAGES:
        return parts[0]
    return {"aux.py": "aux", "memory_wrap.py": "api"}.get(parts[0], "scripts")


def module_group(name: str, root: Path):
    """The group of an imported module of the project (None: not the project's)."""
    top = name.split(".")[0]
    if top in ("datasets", "readers"):
        return "data"
    if top in PACKAGES:
        return top
    if (root / f"{top}.py").is_file():
        return {"aux": "aux", "memory_wrap": "api"}.get(top, "scripts")
    return None


def imported(path: Path, root: Path):
    """(line, module name) of every import in a file, relative imports resolved."""
    package = ".".join(path.relative_to(root).with_suffix("").parts[:-1])
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            yield from ((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[:len(package.split(".")) - node.level + 1] if package else []
                yield node.lineno, ".".join(base + ([node.module] if node.module else []))
            else:
                yield node.lineno, node.module


def violations(root: Path):
    found = []
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(root).parts
        if parts[0] in ("tests", "notebooks", ".venv", "models", "docs") or parts[0].startswith("."):
            continue
        own = group(path, root)
        for line, name in imported(path, root):
            other = module_group(name, root)
            if other is None or other == own:
                continue
            if LAYERS[other] >= LAYERS[own]:
                found.append(f"{path.relative_to(root)}:{line} ({own}) imports {name} ({other})")
    return found


def test_no_module_imports_one_from_a_layer_above_it():
    assert violations(REPO) == []


def test_the_check_sees_an_upward_import_and_one_between_data_and_networks(tmp_path):
    for name, text in (("core/runner.py", "import aux\n"), ("architectures/net.py", "def f():\n    import datasets\n"),
                       ("readers/x.py", "from ..core import config\n"), ("aux.py", "import core\n"),
                       ("datasets.py", ""), ("explanations/e.py", "from core import evaluation\n")):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    assert violations(tmp_path) == ["architectures/net.py:2 (architectures) imports datasets (data)",
                                    "core/runner.py:1 (core) imports aux (aux)",
                                    "readers/x.py:1 (data) imports core (core)"]
