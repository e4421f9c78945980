"""The README's "Write your own saga" example, as files a test can import.

Each ``python`` block of that section starts with a comment naming its file
(``# holiday_saga/definition.py: ...``). The blocks are written once per test process
into a temporary folder put on ``sys.path``, so the README's code is what the tests run.
"""

from __future__ import annotations

import importlib.util
import re
import sys
import tempfile
from functools import cache
from pathlib import Path
from types import ModuleType

README = Path(__file__).resolve().parents[1] / "README.md"
SECTION = "## Write your own saga"
BLOCK = re.compile(r"```python\n# (?P<path>[\w/]+\.py):[^\n]*\n(?P<code>.*?)```", re.DOTALL)
REF = "holiday_saga.definition:HOLIDAY"
"""The ``SAGA_DEFINITIONS`` entry of the README's saga."""


def example_blocks() -> dict[str, str]:
    """File path -> code, for every block of the README section."""
    text = README.read_text()
    start = text.index(SECTION)
    end = text.find("\n## ", start + len(SECTION))
    section = text[start : end if end != -1 else len(text)]
    return {m["path"]: m["code"] for m in BLOCK.finditer(section)}


@cache
def example_dir() -> Path:
    """The folder holding the README's files (on ``sys.path``), written once."""
    folder = Path(tempfile.mkdtemp(prefix="readme-example-"))
    for path, code in example_blocks().items():
        target = folder / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(code)
    (folder / "holiday_saga" / "__init__.py").touch()
    sys.path.insert(0, str(folder))
    return folder


@cache
def example_tests() -> ModuleType:
    """The README's test module, imported under a name of its own."""
    path = example_dir() / "tests" / "test_holiday_saga.py"
    spec = importlib.util.spec_from_file_location("readme_test_holiday_saga", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
