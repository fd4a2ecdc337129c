"""Package boundaries inside collectors/, checked on the source with ast (no imports run).

No engine package imports another: what two engines share lives in collectors/common, which
imports no engine package either. And thresholds are merged once, by the runner
(app/run_context.merged_thresholds): a transform reads ctx.thresholds as it is.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

COLLECTORS = Path(__file__).parents[2] / "collectors"
ENGINE_PACKAGES = ("postgres", "mysql", "sqlserver", "oracle", "cloud")
# Packages whose code every engine may build on, and that must not build on any engine.
NEUTRAL_PACKAGES = ("common",)


def imported_modules(path: Path, root: Path) -> list[tuple[int, str]]:
    """(line, module) of every import in the file, relative ones resolved against its package."""
    package = ".".join(path.relative_to(root.parent).with_suffix("").parts[:-1])
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([base] if base else []))
            out.append((node.lineno, base))
            out += [(node.lineno, f"{base}.{alias.name}") for alias in node.names]
    return out


def engine_of(module: str) -> str | None:
    parts = module.split(".")
    if len(parts) >= 2 and parts[0] == "collectors" and parts[1] in ENGINE_PACKAGES:
        return parts[1]
    return None


def crossings(package: str, root: Path = COLLECTORS) -> list[str]:
    found = []
    for path in sorted((root / package).rglob("*.py")):
        for line, module in imported_modules(path, root):
            other = engine_of(module)
            if other is not None and other != package:
                found.append(f"{path.relative_to(root.parent)}:{line} imports {module}")
    return found


@pytest.mark.parametrize("package", ENGINE_PACKAGES + NEUTRAL_PACKAGES)
def test_no_package_imports_another_engine(package: str):
    assert crossings(package) == []


def test_the_walker_sees_a_crossing(tmp_path: Path):
    """The check above could pass by seeing nothing: plant a crossing and a relative one."""
    fake = tmp_path / "collectors"
    (fake / "oracle").mkdir(parents=True)
    (fake / "oracle" / "x.py").write_text("from collectors.sqlserver.partition_apply import Outcome\n"
                                          "from ..mysql import _common\nfrom .partitions import SQL\n")
    assert crossings("oracle", fake) == ["collectors/oracle/x.py:1 imports collectors.sqlserver.partition_apply",
                                   "collectors/oracle/x.py:1 imports collectors.sqlserver.partition_apply.Outcome",
                                   "collectors/oracle/x.py:2 imports collectors.mysql",
                                   "collectors/oracle/x.py:2 imports collectors.mysql._common"]


def test_transforms_do_not_merge_thresholds_themselves():
    """The runner hands a transform spec defaults < config < overrides already merged."""
    merges = [f"{path.relative_to(COLLECTORS.parent)}:{n}"
              for path in sorted(COLLECTORS.rglob("*.py"))
              for n, line in enumerate(path.read_text().splitlines(), 1)
              if "**THRESHOLDS, **ctx.thresholds" in line]
    assert merges == []
