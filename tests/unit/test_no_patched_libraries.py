"""No library's internals patched (issue 25): the service and its tools run the libraries as
they ship, and extend them only where the libraries offer it (botocore's event hooks,
PynamoDB's signals, a subclass's public methods, a requests adapter).

Every non-test module of local_stack/, bench/, deployed/, layers/ and functions/ is parsed
(ast, nothing imported) and refused when it
- assigns to (or deletes) an attribute of an imported third-party module or class, or of a
  name bound to one (`Queue.attributes = ...`, `pynamodb.connection.table.Connection = ...`,
  a wrapper of the original assigned in its place, `setattr(Handler, ...)`);
- overrides a private method of a third-party base class in a subclass (`def _new_conn`
  over urllib3's HTTPConnection): a private method is no extension point;
- uses unittest.mock's patching outside a test.

The offenders not yet removed are listed in ALLOWED, each with the issue that removes it.
The list can only shrink: an entry whose offence is gone fails the test until it is struck.
"""

from __future__ import annotations

import ast
import importlib
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCANNED = ("local_stack", "bench", "deployed", "layers", "functions")
# Top-level packages and modules that are this repository's own.
FIRST_PARTY = frozenset(
    {"local_stack", "bench", "deployed", "retail_pulse", "retail_pulse_admin"}
    | {"retail_pulse_client", "scripts", "tests", "app"}
)
PATCHING = ("unittest.mock.patch", "mock.patch")

# (module, what it patches): the offences still there. Strike an entry when its patch goes.
# Empty since issue 25: the local stack's AWS is DynamoDB Local and MiniStack as they ship
# (local_stack/aws.py), and the download deadline uses urllib3's public interface.
ALLOWED: dict[tuple[str, str], str] = {}


@dataclass(frozen=True)
class Offence:
    module: str  # path from the repository's root
    target: str  # the library attribute patched, by its full dotted name
    line: int
    how: str

    @property
    def key(self) -> tuple[str, str]:
        return (self.module, self.target)


def modules() -> Iterator[Path]:
    for top in SCANNED:
        for path in sorted((ROOT / top).rglob("*.py")):
            parts = path.relative_to(ROOT).parts
            if any(p in ("tests", ".venv", "node_modules", "__pycache__") for p in parts):
                continue
            if path.name.startswith("test_") or path.name == "conftest.py":
                continue
            yield path


def _third_party(dotted: str) -> bool:
    top = dotted.split(".", 1)[0]
    return top not in FIRST_PARTY and top not in sys.stdlib_module_names


class _Scanner(ast.NodeVisitor):
    """Names bound to third-party modules and classes (imports, and plain aliases of them),
    then every assignment into them. Scope-blind on purpose: an import inside a function
    counts for the whole module, so a patch cannot hide in a function."""

    def __init__(self, module: str) -> None:
        self.module = module
        self.bound: dict[str, str] = {}  # local name -> full dotted name
        self.offences: list[Offence] = []

    def bind_imports(self, tree: ast.AST) -> None:
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.asname:
                        self.bound[alias.asname] = alias.name
                    else:
                        top = alias.name.split(".", 1)[0]
                        self.bound[top] = top
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                for alias in node.names:
                    self.bound[alias.asname or alias.name] = f"{node.module}.{alias.name}"
        # Aliases (`cls = moto.sqs.models.Queue`, `cls = getattr(models, "Queue")`): a few
        # rounds, so an alias of an alias resolves too.
        for _ in range(3):
            for node in ast.walk(tree):
                if isinstance(node, ast.Assign) and len(node.targets) == 1:
                    target, value = node.targets[0], node.value
                    if isinstance(target, ast.Name) and (dotted := self.resolve(value)):
                        self.bound.setdefault(target.id, dotted)

    def resolve(self, node: ast.expr, any_origin: bool = False) -> str | None:
        """The full dotted name `node` denotes when it is rooted in a third-party import
        (`any_origin`: in any import)."""
        if isinstance(node, ast.Name):
            dotted = self.bound.get(node.id)
            return dotted if dotted and (any_origin or _third_party(dotted)) else None
        if isinstance(node, ast.Attribute):
            base = self.resolve(node.value, any_origin)
            return f"{base}.{node.attr}" if base else None
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id == "getattr"
            and len(node.args) >= 2
            and isinstance(node.args[1], ast.Constant)
            and isinstance(node.args[1].value, str)
        ):
            base = self.resolve(node.args[0])
            return f"{base}.{node.args[1].value}" if base else None
        return None

    def _flag(self, node: ast.AST, target: str, how: str) -> None:
        self.offences.append(Offence(self.module, target, getattr(node, "lineno", 0), how))

    def _assigned(self, node: ast.AST, targets: list[ast.expr], how: str) -> None:
        for target in targets:
            if isinstance(target, (ast.Tuple, ast.List)):
                self._assigned(node, list(target.elts), how)
            elif isinstance(target, ast.Attribute) and (dotted := self.resolve(target)):
                self._flag(node, dotted, how)

    def visit_Assign(self, node: ast.Assign) -> None:
        self._assigned(node, node.targets, "assigned")
        self.generic_visit(node)

    def visit_AugAssign(self, node: ast.AugAssign) -> None:
        self._assigned(node, [node.target], "assigned")
        self.generic_visit(node)

    def visit_AnnAssign(self, node: ast.AnnAssign) -> None:
        self._assigned(node, [node.target], "assigned")
        self.generic_visit(node)

    def visit_Delete(self, node: ast.Delete) -> None:
        self._assigned(node, node.targets, "deleted")
        self.generic_visit(node)

    def visit_Call(self, node: ast.Call) -> None:
        func = node.func
        name = func.id if isinstance(func, ast.Name) else None
        if name in ("setattr", "delattr") and len(node.args) >= 2:
            owner = self.resolve(node.args[0])
            attr = node.args[1]
            if owner:
                what = attr.value if isinstance(attr, ast.Constant) else "<computed>"
                self._flag(node, f"{owner}.{what}", f"{name}()")
        dotted = self.resolve(func, any_origin=True)
        if dotted and dotted.startswith(PATCHING):
            self._flag(node, dotted, "mock patching")
        self.generic_visit(node)

    def visit_ClassDef(self, node: ast.ClassDef) -> None:
        bases = [dotted for base in node.bases if (dotted := self.resolve(base))]
        for item in node.body:
            if not isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            private = item.name.startswith("_") and not item.name.startswith("__")
            for base in bases if private else ():
                if owner := _defining_class(base, item.name):
                    self._flag(item, f"{owner}.{item.name}", "private method overridden")
        self.generic_visit(node)


def _defining_class(dotted: str, attribute: str) -> str | None:
    """The dotted name of the class in `dotted`'s MRO that defines `attribute`, or None
    (also when the library is not installed here: nothing to check against)."""
    module_name, _, class_name = dotted.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError):
        return None
    for klass in getattr(cls, "__mro__", ()):
        if attribute in vars(klass):
            return f"{klass.__module__}.{klass.__qualname__}"
    return None


def scan(path: Path) -> list[Offence]:
    module = path.relative_to(ROOT).as_posix()
    tree = ast.parse(path.read_text(), filename=module)
    scanner = _Scanner(module)
    scanner.bind_imports(tree)
    scanner.visit(tree)
    return scanner.offences


@pytest.fixture(scope="module")
def offences() -> list[Offence]:
    return [offence for path in modules() for offence in scan(path)]


def test_no_module_patches_a_library(offences: list[Offence]) -> None:
    new = [o for o in offences if o.key not in ALLOWED]
    assert not new, "\n".join(
        f"{o.module}:{o.line}: {o.target} {o.how}: use the library's public extension "
        "points (or another emulator), not its internals"
        for o in new
    )


def test_the_allow_list_only_shrinks(offences: list[Offence]) -> None:
    found = {o.key for o in offences}
    gone = sorted(key for key in ALLOWED if key not in found)
    assert not gone, f"no longer patched, strike from ALLOWED: {gone}"


# -- the checker itself -------------------------------------------------------------------


def _scan_source(source: str) -> list[tuple[str, str]]:
    scanner = _Scanner("example.py")
    tree = ast.parse(source)
    scanner.bind_imports(tree)
    scanner.visit(tree)
    return [(o.target, o.how) for o in scanner.offences]


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        (
            "import pynamodb.connection.table\npynamodb.connection.table.Connection = object",
            [("pynamodb.connection.table.Connection", "assigned")],
        ),
        (
            "def patch():\n    from moto.sqs.models import Queue\n    original = Queue.x\n"
            "    def x(self):\n        return original(self)\n    Queue.x = x",
            [("moto.sqs.models.Queue.x", "assigned")],
        ),
        (
            "import moto.sqs.models as m\ncls = getattr(m, 'Queue')\nsetattr(cls, 'y', 1)",
            [("moto.sqs.models.Queue.y", "setattr()")],
        ),
        (
            "import urllib3.connection\nclass C(urllib3.connection.HTTPConnection):\n"
            "    def _new_conn(self):\n        return super()._new_conn()",
            [("urllib3.connection.HTTPConnection._new_conn", "private method overridden")],
        ),
        (
            "from unittest import mock\nmock.patch('x.y').start()",
            [("unittest.mock.patch", "mock patching")],
        ),
    ],
)
def test_the_checker_finds_a_patch(source: str, expected: list[tuple[str, str]]) -> None:
    assert _scan_source(source) == expected


@pytest.mark.parametrize(
    "source",
    [
        # Instances, subclasses' public methods, the service's own classes, the standard
        # library, botocore's hooks, PynamoDB's signals.
        "import requests\ns = requests.Session()\ns.headers = {}",
        "import urllib3\nclass P(urllib3.HTTPConnectionPool):\n    ConnectionCls = object\n"
        "    def urlopen(self, *a):\n        return super().urlopen(*a)",
        "from retail_pulse.data.models import JobRecord\nJobRecord._connection = None",
        "import logging\nlogging.getLogger('x').propagate = False",
        "from pynamodb.signals import pre_dynamodb_send\npre_dynamodb_send.connect(print)",
        "import boto3\nc = boto3.client('sqs')\nc.meta.events.register('x', print)",
    ],
)
def test_the_checker_lets_extension_through(source: str) -> None:
    assert _scan_source(source) == []
