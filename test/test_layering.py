"""The package's folders are its layers and every import points down (an AST walk, as import-linter does).

Rooms, bottom to top: ``core`` (artifact format, device, preprocessing, metrics, atomic writes,
errors) < ``models``, ``losses`` < ``data`` < ``sim`` < ``train`` < ``deploy`` < ``nodes`` < ``tools``.
Each room may import only the rooms listed for it in ``ALLOWED``; in particular deployment
(``deploy``, ``nodes``) never imports training or the tools, the models never read files, and the
core imports nothing above it. Imports of mmkd_ros modules sit at module top, where these arrows
are visible; the few deferred ones carry a ``# deferred: <reason>`` comment.
"""
from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

PACKAGE_ROOT = Path(__file__).resolve().parents[1] / "mmkd_ros"

#: room -> rooms (or single modules) it may import. The package root (``mmkd_ros``: the version)
#: is allowed everywhere.
ALLOWED: dict[str, set[str]] = {
    "core": {"core"},
    "models": {"core", "models"},
    "losses": {"core"},
    "data": {"core", "data"},
    "sim": {"core", "data", "sim"},
    "train": {"core", "models", "losses", "data", "train"},
    "deploy": {"core", "models", "deploy"},
    "nodes": {"core", "deploy", "data.ros_images", "data.pairing", "nodes"},
    "tools": {"core", "models", "losses", "data", "sim", "train", "deploy", "nodes", "tools"},
}
DEFERRED_MARK = "# deferred:"


@dataclass(frozen=True)
class Violation:
    path: str
    line: int
    target: str
    why: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: imports {self.target}: {self.why}"


def _room(module: str) -> str:
    """``mmkd_ros.train.loop`` -> ``train``; ``mmkd_ros.losses`` -> ``losses``; ``mmkd_ros`` -> ``""``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def _allowed(source_room: str, target: str) -> bool:
    if target == "mmkd_ros":
        return True
    rest = target.split(".", 1)[1]
    return any(rest == allowed or rest.startswith(allowed + ".") for allowed in ALLOWED[source_room])


def _imports(tree: ast.Module) -> list[tuple[ast.stmt, str, bool]]:
    """(node, imported mmkd_ros module, at module top?) for every import of the package."""
    top = {id(node) for node in tree.body}
    for node in tree.body:  # `if TYPE_CHECKING:` blocks and try/except at module level count as top
        if isinstance(node, (ast.If, ast.Try)):
            top |= {id(child) for child in ast.walk(node)}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module and node.module.split(".")[0] == "mmkd_ros":
            if node.module == "mmkd_ros":  # `from mmkd_ros import x`: x may be a subpackage or a name
                names = [f"mmkd_ros.{a.name}" if (PACKAGE_ROOT / a.name).exists() or (PACKAGE_ROOT / f"{a.name}.py").exists()
                         else "mmkd_ros" for a in node.names]
            else:
                names = [node.module]
            found += [(node, name, id(node) in top) for name in names]
        elif isinstance(node, ast.Import):
            found += [(node, a.name, id(node) in top) for a in node.names if a.name.split(".")[0] == "mmkd_ros"]
    return found


def check_layers(package_root: Path) -> list[Violation]:
    """Every import of ``package_root``'s modules that points up, sideways out of bounds, or hides in a function."""
    violations = []
    for path in sorted(package_root.rglob("*.py")):
        relative = path.relative_to(package_root.parent).with_suffix("")
        module = ".".join(relative.parts[:-1] if relative.name == "__init__" else relative.parts)
        room = _room(module)
        if room not in ALLOWED:
            if room:  # a module directly in mmkd_ros/ other than the known rooms: it needs a place
                violations.append(Violation(str(path), 1, module, f"room '{room}' is not in the layer table"))
            continue
        source_lines = path.read_text().splitlines()
        for node, target, at_top in _imports(ast.parse(path.read_text(), str(path))):
            if not _allowed(room, target):
                violations.append(Violation(str(path), node.lineno, target,
                                            f"'{room}' may import only {', '.join(sorted(ALLOWED[room]))}"))
            if not at_top and DEFERRED_MARK not in source_lines[node.lineno - 1]:
                violations.append(Violation(str(path), node.lineno, target,
                                            f"import inside a function without a '{DEFERRED_MARK} <reason>' comment"))
    return violations


def test_the_package_is_layered():
    violations = check_layers(PACKAGE_ROOT)
    assert not violations, "\n".join(map(str, violations))


def test_every_room_exists_and_no_module_sits_outside_one():
    rooms = {p.name for p in PACKAGE_ROOT.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    modules = {p.stem for p in PACKAGE_ROOT.glob("*.py") if p.name != "__init__.py"}
    assert rooms | modules == set(ALLOWED)


def _fixture_package(tmp_path: Path, files: dict[str, str]) -> Path:
    root = tmp_path / "mmkd_ros"
    for room in ALLOWED:
        if room != "losses":
            (root / room).mkdir(parents=True, exist_ok=True)
            (root / room / "__init__.py").write_text("")
    (root / "__init__.py").write_text("")
    (root / "losses.py").write_text("import torch\n")
    for name, text in files.items():
        (root / name).write_text(text)
    return root


@pytest.mark.parametrize(("name", "text", "why"), [
    ("deploy/classifier.py", "from mmkd_ros.train.loop import fit\n", "'deploy' may import only"),
    ("nodes/student_node.py", "import mmkd_ros.tools.pipeline\n", "'nodes' may import only"),
    ("nodes/student_node.py", "from mmkd_ros.data.bag import BagReader\n", "'nodes' may import only"),
    ("models/registry.py", "from mmkd_ros.data.dataset import open_dataset\n", "'models' may import only"),
    ("losses.py", "from mmkd_ros.data import dataset\n", "'losses' may import only"),
    ("core/artifact.py", "from mmkd_ros.models import build_model\n", "'core' may import only"),
    ("train/loop.py", "def f():\n    from mmkd_ros.core import artifact\n", "import inside a function"),
])
def test_a_broken_import_is_caught(tmp_path, name, text, why):
    root = _fixture_package(tmp_path, {name: text})
    violations = check_layers(root)
    assert len(violations) == 1 and why in violations[0].why, violations


def test_allowed_imports_and_marked_deferred_ones_pass(tmp_path):
    root = _fixture_package(tmp_path, {
        "nodes/base.py": "from mmkd_ros.data.ros_images import msg_to_array\nfrom mmkd_ros.core import errors\n"
                         "def load():\n    from mmkd_ros.deploy.classifier import Classifier  # deferred: torch\n",
        "tools/demo.py": "from mmkd_ros.train import loop\nfrom mmkd_ros.nodes import base\nfrom mmkd_ros import losses\n",
    })
    assert check_layers(root) == []
