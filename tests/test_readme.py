"""The README's Python API example runs as written, on a CNN of the user's own."""
import re
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"


def api_example() -> str:
    section = README.read_text().split("## Python API", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, re.S)
    assert len(blocks) == 1
    return blocks[0]


def test_the_python_api_example_runs(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    exec(compile(api_example(), "README.md", "exec"), {})
    assert re.match(r"\d+ of 12 images misclassified", capsys.readouterr().out)
    saved = {p.name for p in tmp_path.glob("*.png")}
    assert {"misclassified.png", "confusion.png", "saliency.png", "robustness.png", "fooling.png"} <= saved
