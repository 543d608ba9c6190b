"""The code's shape, measured: one job per module and one step per function, so a reader
finds a thing by its module's name and reads a function whole. No module in layers/ is over
MAX_MODULE_LINES lines, and no function in layers/ or functions/ over MAX_FUNCTION_LINES
(from its `def` to its last line, docstring included)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MAX_MODULE_LINES = 450
MAX_FUNCTION_LINES = 60


def _python_files(top: str) -> list[Path]:
    return sorted(path for path in (ROOT / top).rglob("*.py") if ".venv" not in path.parts)


def test_no_module_in_the_layer_is_over_the_limit() -> None:
    paths = _python_files("layers")
    assert paths
    lines = {str(path.relative_to(ROOT)): len(path.read_text().splitlines()) for path in paths}
    assert {path: n for path, n in lines.items() if n > MAX_MODULE_LINES} == {}


def test_no_function_in_the_layer_or_the_functions_is_over_the_limit() -> None:
    paths = _python_files("layers") + _python_files("functions")
    assert paths
    long: dict[str, int] = {}
    for path in paths:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                length = (node.end_lineno or node.lineno) - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    long[f"{path.relative_to(ROOT)}:{node.lineno} {node.name}"] = length
    assert long == {}
