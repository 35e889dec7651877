"""The report's cache of analysis results (issue 18): a cached result that is damaged in a way
the JSON reader cannot see (a field of the wrong type, an epoch that is not there, arrays of
another run) is not used; the analysis runs again, and the report is made."""
import json
import shutil

import pytest

from test_model_folder import write_tiny_model
from test_report import small_plan, write_history

from probe.report.build import run_report


@pytest.fixture(scope="module")
def cached(tmp_path_factory):
    root = tmp_path_factory.mktemp("cache")
    write_tiny_model(root / "tiny-a")
    write_history(root / "tiny-a")
    plan = small_plan(root, names=("tiny-a",))
    plan.steps = [s for s in plan.steps if s.analysis == "curves"]
    run_report([root / "tiny-a"], out=root / "out", plan=plan, formats=("html",))
    return root, plan


# (what the damage does, how: a change of results.json's "results"); each raised from the
# section before the fix (ValueError), and the report stopped
DAMAGE = [
    ("best epoch not among the epochs", lambda r: r["runs"][0].update(best_epoch=99)),
    ("errors as text", lambda r: r["runs"][0].update(val_error=["x"] * len(r["runs"][0]["val_error"]))),
]


@pytest.mark.parametrize("what, damage", DAMAGE, ids=[d[0] for d in DAMAGE])
def test_a_damaged_cached_result_is_made_again(cached, tmp_path, what, damage):
    root, plan = cached
    out = shutil.copytree(root / "out", tmp_path / "out")
    path = out / "analyses" / "tiny-a" / "curves" / "results.json"
    doc = json.loads(path.read_text())
    damage(doc["results"])
    path.write_text(json.dumps(doc))
    again = run_report([root / "tiny-a"], out=out, plan=plan, formats=("html",))
    assert again.result["reused"] == 0  # the damaged result is not reused
    assert json.loads(path.read_text())["results"]["runs"][0]["best_epoch"] == 3  # made again


def test_an_intact_cache_is_reused(cached, tmp_path):
    root, plan = cached
    out = shutil.copytree(root / "out", tmp_path / "out")
    assert run_report([root / "tiny-a"], out=out, plan=plan, formats=("html",)).result["reused"] == 1


def test_models_with_names_as_long_as_a_folder_may_have(tmp_path, monkeypatch):
    """Found by the fuzz suite: a model folder's name of 200 characters made figure files
    (figures/<name>-curves-....pdf) and the report's folder (reports/<a>-vs-<b>) longer than a
    file name may be: OSError. Anchors are cut to 64 characters, ending in a hash of the name."""
    from probe.presentation import slug
    names = ["m" * 200 + "-a", "m" * 200 + "-b"]  # the same first 200 characters
    for name in names:
        write_tiny_model(tmp_path / name)
        write_history(tmp_path / name)
    plan = small_plan(tmp_path, names=names)
    plan.steps = [s for s in plan.steps if s.analysis == "curves"]
    monkeypatch.chdir(tmp_path)
    result = run_report([tmp_path / n for n in names], plan=plan, formats=("html", "pdf"))
    files = list(result.folder.rglob("*"))
    assert all(len(p.name) <= 255 for p in files) and (result.folder / "report.pdf").is_file()
    assert len({slug(n) for n in names}) == 2 and all(len(slug(n)) <= 64 for n in names)


def test_comparison_of_a_cached_saliency_result_without_its_arrays(tmp_path):
    """Found by the fuzz suite: a saliency result cached without arrays.safetensors makes its own
    section (which needs none of them), but the comparison of two models draws their maps side by
    side: AttributeError ('NoneType' object has no attribute 'shape'), and no report."""
    import dataclasses

    import torch

    from probe.analysis.saliency import saliency
    from probe.models.folder import read_model_folder
    from probe.report.structure import comparison_section
    from test_saliency import FAST, tiny_cnn
    a = saliency(tiny_cnn(torch.float32), torch.rand(2, 1, 8, 8), 1, methods="vanilla", name="a", config=FAST)
    b = dataclasses.replace(a, model="b", images=None, attributions=None, frames=None)
    folder = read_model_folder(write_tiny_model(tmp_path / "tiny"))
    s = comparison_section([folder, folder], per_model=[{"saliency": a}, {"saliency": b}], out=tmp_path / "c")
    text = [c.text for part in s.children if hasattr(part, "children") for c in part.children if hasattr(c, "text")]
    assert any(t.startswith("Not compared: a saliency result cannot be drawn") for t in text), text
