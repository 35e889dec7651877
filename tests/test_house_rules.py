"""House rules of issue 14, checked on the source: short functions, probe's own imports at the
top of a module (the CLI's lazy ones aside: they keep `probe --help` fast)."""
import ast
from pathlib import Path

import pytest

PROBE = Path(__file__).resolve().parent.parent / "probe"
MAX_LINES = 60
# Function-level imports of probe's own modules that are there for a reason.
LAZY_OK = {
    "cli.py": "start-up time: `probe --help` must not import torch",
    "__init__.py": "start-up time of `import probe`",
    "analysis/base.py": "the registry imports every analysis module, which imports base",
    "models/folder.py": "start-up time: reading meta.json (`probe models list`) must not import torch",
    "report/tables.py": "start-up time: `probe models list` must not import torch (the zoo does)",
}


def functions(tree):
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            yield node


def sources():
    return sorted(PROBE.rglob("*.py"))


def test_no_function_is_longer_than_60_lines():
    long = []
    for path in sources():
        for fn in functions(ast.parse(path.read_text())):
            body = fn.end_lineno - fn.body[0].lineno + 1  # the signature (the CLI's option lists) aside
            if body > MAX_LINES:
                long.append(f"{path.relative_to(PROBE)}:{fn.lineno} {fn.name} ({body} lines)")
    assert not long, long


def test_probe_modules_are_imported_at_the_top():
    inner = []
    for path in sources():
        rel = str(path.relative_to(PROBE))
        if rel in LAZY_OK:
            continue
        for fn in functions(ast.parse(path.read_text())):
            for node in ast.walk(fn):
                if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("probe") or \
                        isinstance(node, ast.Import) and any(a.name.startswith("probe") for a in node.names):
                    inner.append(f"{rel}:{node.lineno} in {fn.name}")
    assert not inner, inner


@pytest.mark.parametrize("rule", [test_no_function_is_longer_than_60_lines, test_probe_modules_are_imported_at_the_top])
def test_the_rules_can_fail(rule, tmp_path, monkeypatch):
    """Each rule, run on a module that breaks it, fails."""
    bad = tmp_path / "probe"
    bad.mkdir()
    (bad / "bad.py").write_text("def f():\n    from probe.io import atomic_write_json\n"
                                + "    x = 1\n" * MAX_LINES)
    monkeypatch.setattr(__import__(__name__), "PROBE", bad)
    with pytest.raises(AssertionError):
        rule()


def test_listing_the_models_does_not_import_torch(tmp_path):
    """`probe models list` reads every model's meta.json and nothing else: 0.4 s instead of 3 s
    once it stopped importing PyTorch (2.5 s of the 3) on the way."""
    import subprocess
    import sys
    code = ("import sys; from probe.report.tables import models_text; "
            "print(models_text(sys.argv[1])); assert 'torch' not in sys.modules, 'torch was imported'")
    root = PROBE.parent / "trained_models"
    run = subprocess.run([sys.executable, "-c", code, str(root)], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    assert "mnist-resnet20" in run.stdout and "67,906" in run.stdout
