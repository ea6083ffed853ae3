"""The import layering: platform packages → ground floor ← core, and nothing else.

The ground floor is the plugin contract: the top-level modules of ``connectors/`` (``base``,
``errors``, ``config``, ``log``, ``supplier``, the fake-server base...), ``connectors/common/``
and ``connectors/testing/``. A platform package is every other package under ``connectors/``
(``connectors/taobao/``, ``connectors/memory/``...). The rules, read from the source with
:mod:`ast` (nothing is imported, so a broken module cannot hide a violation):

* no module of the ground floor imports ``robot`` or a platform package;
* no module of a platform package imports ``robot`` or another platform package;
* no module of ``robot/`` imports a platform package, nor imports anything by a computed name
  outside ``robot`` (the core reaches plugins only through entry points);
* the example third-party plugins under ``examples/`` import only the ground floor and their
  own package.

Run it on its own with ``python -m pytest tests/test_layering.py`` or
``python tests/test_layering.py`` (prints every violation, exit status 1 if any).
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
#: Sub-packages of ``connectors/`` that belong to the ground floor (not platforms).
GROUND_PACKAGES = frozenset({"common", "testing"})
#: The functions that import a module by a name computed at run time.
DYNAMIC_IMPORTERS = frozenset({"import_module", "__import__"})


@dataclass(frozen=True, slots=True)
class Violation:
    path: str
    line: int
    imported: str
    rule: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: imports {self.imported}: {self.rule}"


def module_name(path: Path, root: Path = ROOT) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _resolve(node: ast.ImportFrom, module: str, is_package: bool) -> str:
    """The absolute module a (possibly relative) ``from ... import`` names."""
    if node.level == 0:
        return node.module or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join([*base, node.module] if node.module else base)


def _literal_prefix(arg: ast.expr) -> str | None:
    """The constant text a dynamic import's name starts with (None: computed from the start)."""
    if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
        return arg.value
    if isinstance(arg, ast.JoinedStr) and arg.values:
        first = arg.values[0]
        if isinstance(first, ast.Constant) and isinstance(first.value, str):
            return first.value
    return None


def imports(path: Path, root: Path = ROOT) -> Iterator[tuple[int, str, bool]]:
    """(line, imported module, dynamic) for every import in the file at ``path``; a dynamic
    import whose name is computed yields its constant prefix (possibly empty)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    module = module_name(path, root)
    is_package = path.name == "__init__.py"
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name, False
        elif isinstance(node, ast.ImportFrom):
            base = _resolve(node, module, is_package)
            yield node.lineno, base, False
            for alias in node.names:  # ``from connectors import taobao`` names a package
                yield node.lineno, f"{base}.{alias.name}" if base else alias.name, False
        elif isinstance(node, ast.Call) and node.args:
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if name in DYNAMIC_IMPORTERS:
                yield node.lineno, _literal_prefix(node.args[0]) or "", True


def _top(name: str, depth: int) -> str:
    return ".".join(name.split(".")[:depth])


def platform_of(module: str, root: Path = ROOT) -> str | None:
    """The platform package a ``connectors.*`` module belongs to (None: ground floor)."""
    parts = module.split(".")
    if parts[0] != "connectors" or len(parts) < 2:
        return None
    if parts[1] in GROUND_PACKAGES or not (root / "connectors" / parts[1]).is_dir():
        return None
    return parts[1]


def _is_robot(name: str) -> bool:
    return name == "robot" or name.startswith("robot.")


def check_file(path: Path, root: Path = ROOT) -> list[Violation]:
    """Every layering rule the module at ``path`` (inside the tree at ``root``) breaks."""
    module = module_name(path, root)
    shown = str(path.relative_to(root))
    found: list[Violation] = []
    own_platform = platform_of(module, root)
    for line, name, dynamic in imports(path, root):
        target_platform = platform_of(name, root)
        if module.startswith("robot"):
            if target_platform is not None:
                found.append(Violation(shown, line, name, "the core never names a platform "
                                       "package; it reaches plugins through entry points"))
            elif dynamic and not _is_robot(name):
                found.append(Violation(shown, line, name or "<computed name>",
                                       "the core imports by computed name only inside robot"))
        elif module.startswith("connectors"):
            if _is_robot(name):
                found.append(Violation(shown, line, name, "a plugin (and the ground floor) "
                                       "never imports the core"))
            elif target_platform is not None and target_platform != own_platform:
                what = "the ground floor" if own_platform is None else "a platform package"
                found.append(Violation(shown, line, name,
                                       f"{what} never imports a platform package"))
        elif module.startswith("examples"):
            own = path.relative_to(root / "examples").parts[0]
            if _is_robot(name) or target_platform is not None:
                found.append(Violation(shown, line, name, f"the example plugin {own!r} is "
                                       "built only on the ground floor"))
    seen: set[tuple[int, str]] = set()  # one report per import statement and rule
    return [v for v in found if (v.line, v.rule) not in seen and not seen.add((v.line, v.rule))]


def sources() -> list[Path]:
    found = [*sorted((ROOT / "robot").rglob("*.py")), *sorted((ROOT / "connectors").rglob("*.py"))]
    examples = ROOT / "examples"
    if examples.is_dir():
        found += sorted(p for p in examples.rglob("*.py") if "tests" not in p.parts)
    return found


def violations() -> list[Violation]:
    return [v for path in sources() for v in check_file(path)]


# -- the rules ----------------------------------------------------------------------------------


def test_imports_follow_the_layering() -> None:
    """No platform package or ground-floor module imports robot, no platform imports another,
    and the core never imports a platform package (statically or by computed name)."""
    found = violations()
    assert not found, "layering violations:\n" + "\n".join(map(str, found))


def test_the_checker_sees_every_kind_of_violation(tmp_path: Path) -> None:
    """The checker itself flags a core import of a platform, a plugin import of robot, a
    relative import reaching across, and a computed import in the core."""
    cases = {
        "robot/_probe_static.py": "from connectors.taobao import fake\n",
        "robot/_probe_from.py": "from connectors import taobao\n",
        "robot/_probe_checking.py": "if TYPE_CHECKING:\n    import connectors.youzan.client\n",
        "robot/_probe_dynamic.py": "import importlib\nimportlib.import_module(f'connectors.{x}')\n",
        "connectors/taobao/_probe.py": "from robot.errors import Fatal\n",
        "connectors/taobao/_probe_rel.py": "from ..youzan import client\n",
        "connectors/_probe_ground.py": "import robot.log\n",
    }
    for package in ("robot", "connectors/taobao", "connectors/youzan"):
        (tmp_path / package).mkdir(parents=True, exist_ok=True)
    for rel, text in cases.items():
        path = tmp_path / rel
        path.write_text(text, encoding="utf-8")
        assert check_file(path, tmp_path), f"{rel} should break a rule"


def test_the_ground_floor_and_the_core_are_allowed_their_imports(tmp_path: Path) -> None:
    """The allowed directions pass: a platform importing the ground floor and itself, the
    core importing the ground floor and itself by computed name."""
    for package in ("robot", "connectors/taobao"):
        (tmp_path / package).mkdir(parents=True)
    core = tmp_path / "robot" / "probe.py"
    core.write_text("import importlib\nfrom connectors.base import Order\n"
                    "importlib.import_module(f'robot.cli.{name}')\n", encoding="utf-8")
    plugin = tmp_path / "connectors" / "taobao" / "probe.py"
    plugin.write_text("from connectors.errors import Fatal\nfrom . import client\n",
                      encoding="utf-8")
    assert check_file(core, tmp_path) == []
    assert check_file(plugin, tmp_path) == []


def main() -> int:
    found = violations()
    for violation in found:
        print(violation)
    print(f"{len(found)} layering violation(s) in {len(sources())} modules")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
