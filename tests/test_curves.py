"""`probe curves` and `probe compare`: curves read from history.json as written (old and new
records, repeated epochs, gaps), every plotted number in results.json, each run one colour with
train dashed and validation solid, a vector PDF without raster images; the compare table from
meta.json; bad input as one line and exit code 2."""
import json
import math
import re
import shutil
import sys
from pathlib import Path

import pytest
import torch
from pypdf import PdfReader

import probe.cli
from probe.analysis import curves as curves_analysis
from probe.analysis.base import Context
from probe.analysis.compare import compare_text, differing_settings, run_compare
from probe.analysis.curves import (CurvesResult, Settings, curves_of, folder_curves, learning_curves,
                                   lr_marks, run_curves)
from probe.analysis.registry import ANALYSES
from probe.analysis.runner import resolve_runs
from probe.errors import ConfigError, ModelFileError
from probe.figures.curves import curves_figure
from probe.methods.confusion import wilson_interval
from probe.models.folder import read_model_folder

sys.path.insert(0, str(Path(__file__).parent))
ROOT = Path(__file__).resolve().parents[1]
from test_model_folder import write_tiny_model  # noqa: E402
from train_helpers import tiny_config, tiny_splits  # noqa: E402


def record(epoch, train_error, val_error, train_loss, val_loss, **more):
    return {"epoch": epoch, "train_error": train_error, "val_error": val_error,
            "train_loss": train_loss, "val_loss": val_loss, **more}


OLD = [record(1, 0.5, 0.4, 1.5, 1.2, best=True), record(2, 0.3, 0.35, 1.0, 1.1, best=True),
       record(3, 0.2, 0.36, 0.8, 1.15, best=False)]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Two real runs of `probe train` on tiny data: residual and plain, the real comparison in
    miniature (the plain one with label smoothing, so its history has a separate objective)."""
    root = tmp_path_factory.mktemp("runs")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models: threads cost more than they give
    try:
        from probe.train.run import train
        train(tiny_config(arch="resnet8", epochs=3), root / "tiny-resnet8", splits=tiny_splits())
        train(tiny_config(arch="plain8", epochs=3, label_smoothing=0.1), root / "tiny-plain8",
              splits=tiny_splits())
    finally:
        torch.set_num_threads(threads)
    return root


def with_history(folder: Path, history) -> Path:
    (folder / "history.json").write_text(json.dumps(history))
    return folder


# ---- the analysis -----------------------------------------------------------------------------
def test_curves_hold_the_history_numbers_in_epoch_order():
    run = run_curves("a", list(reversed(OLD)))
    assert run.epoch == [1, 2, 3]
    assert run.train_error == [0.5, 0.3, 0.2] and run.val_error == [0.4, 0.35, 0.36]
    assert run.train_loss == [1.5, 1.0, 0.8] and run.val_loss == [1.2, 1.1, 1.15]
    assert run.train_objective == run.train_loss  # no smoothing: the same number
    assert run.best_epoch == 2 and run.notes == []


def test_an_old_smoothed_history_shows_its_train_loss_as_the_objective():
    old = run_curves("old", OLD, label_smoothing=0.1)
    assert old.train_objective == [1.5, 1.0, 0.8] and old.train_loss == [None, None, None]
    assert old.smoothed and "label smoothing" in old.notes[0]
    new = run_curves("new", [r | {"train_objective": r["train_loss"] + 0.2} for r in OLD],
                     label_smoothing=0.1)
    assert new.train_loss == [1.5, 1.0, 0.8]
    assert new.train_objective == pytest.approx([1.7, 1.2, 1.0]) and new.notes == []


def test_a_repeated_epoch_keeps_its_last_record_and_gaps_stay_gaps():
    history = [record(1, 0.5, None, 1.5, 1.2), record(2, 0.4, 0.3, 1.1, 1.0),
               record(2, 0.35, 0.25, 1.0, float("nan")), {"epoch": 3, "train_error": 0.2}]
    run = run_curves("r", history)
    assert run.epoch == [1, 2, 3]
    assert run.train_error == [0.5, 0.35, 0.2] and run.val_error == [None, 0.25, None]
    assert run.val_loss == [1.2, None, None]  # NaN: a gap, not a number
    assert "epoch 2 recorded twice" in run.notes[0] and run.best_epoch is None


@pytest.mark.parametrize("bad,words", [({"epoch": "1"}, "epoch '1'"), ({"epoch": 0}, "epoch 0"),
                                       ({"epoch": 1, "val_error": "0.3"}, "val_error is '0.3'"),
                                       ({"epoch": 1, "train_loss": True}, "train_loss is True")])
def test_a_broken_record_is_named(bad, words):
    with pytest.raises(ModelFileError, match=re.escape(words)):
        run_curves("r", [bad])


def test_curves_of_model_folders(tmp_path):
    a = with_history(write_tiny_model(tmp_path / "a"), OLD)
    b = write_tiny_model(tmp_path / "b")
    curves = curves_of([read_model_folder(a)])
    assert [r.name for r in curves.runs] == ["a"] and curves.runs[0].val_error == [0.4, 0.35, 0.36]
    with pytest.raises(ModelFileError, match="no history.json"):
        curves_of([read_model_folder(b)])
    assert learning_curves({"x": OLD, "y": OLD[:2]}).to_dict()["runs"][1]["epoch"] == [1, 2]


def test_the_result_round_trips_through_json_and_the_settings_are_checked():
    result = learning_curves({"a": OLD, "b": OLD[:2]}, label_smoothing={"b": 0.1}, log=True)
    doc = json.loads(json.dumps(result.to_json()))
    assert doc["kind"] == "curves" and doc["log"] is True and doc["runs"][1]["epoch"] == [1, 2]
    back = CurvesResult.from_json(doc)
    assert back == result and back.runs[1].smoothed
    with pytest.raises(ModelFileError, match="malformed run"):
        CurvesResult.from_json(doc | {"runs": [{"name": "a"}]})
    with pytest.raises(ModelFileError, match="not a curves result"):
        CurvesResult.from_json({"kind": "misclassified"})
    assert Settings().to_json() == {"log": True, "max_epoch": None, "error_range": None, "loss_range": None}
    with pytest.raises(ConfigError, match="--log"):
        Settings(log="yes")
    for bad in ({"max_epoch": 0}, {"max_epoch": 2.5}, {"error_range": (0.1, 0.05)},
                {"error_range": (0.0, 0.5)}, {"loss_range": (1, float("nan"))}, {"loss_range": (1,)}):
        with pytest.raises(ConfigError, match=next(iter(bad))):
            Settings(**bad)


def test_run_reads_the_folders_of_its_contexts_without_weights(tmp_path):
    a = read_model_folder(with_history(write_tiny_model(tmp_path / "a"), OLD))
    b = read_model_folder(with_history(write_tiny_model(tmp_path / "b"), OLD[:2]))
    (b.path / "weights.safetensors").unlink()  # curves need no weights
    one = curves_analysis.run(Context.of(None, folder=a), Settings())
    assert [r.name for r in one.runs] == ["a"] and one.runs[0].val_error == [0.4, 0.35, 0.36]
    both = curves_analysis.run([Context.of(None, folder=a), Context.of(None, folder=b, name="bee")],
                               Settings(log=True))
    assert [r.name for r in both.runs] == ["a", "bee"] and both.log
    entry = ANALYSES["curves"]
    assert entry.joint and not entry.needs_model and not entry.needs_data
    assert list(entry.figures(both)) == ["curves"]
    refs = entry.section(one).children
    assert [type(r).__name__ for r in refs] == ["FigureRef", "Text"]
    assert refs[0].stem == "curves" and refs[0].caption.startswith("a: training (thin, dashed)")
    assert refs[0].data == {"runs": [one.runs[0].to_dict()]}
    assert one.runs[0].val_n is None  # this folder's meta has no split sizes: no interval, and it says so
    assert "a 35.00% (validation size unknown: no interval) at epoch 2" in refs[1].text
    assert "on one plot" in entry.section(both).children[0].caption
    assert entry.summary(one)[0] == "a: 3 epochs, best epoch 2 (val error 35.00%), final train error 20.00%"
    assert both.summary()[-2] == "error and loss on a log scale"
    with pytest.raises(ConfigError, match="model folder"):
        curves_analysis.run(Context.of(torch.nn.Identity(), classes=2), Settings())
    import matplotlib.pyplot as plt
    plt.close("all")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_learning_curves_of_a_foreign_training_loop(dtype):
    """The public function on the history of a user's own nn.Sequential CNN, trained a few epochs
    in float32 or float64: the recorded numbers come back, and result.figures() draws them."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.ReLU(),
                              torch.nn.AdaptiveAvgPool2d(2), torch.nn.Flatten(),
                              torch.nn.Linear(16, 3)).to(dtype)
    x, y = torch.rand(24, 1, 8, 8, dtype=dtype), torch.arange(24) % 3
    xv, yv = torch.rand(12, 1, 8, 8, dtype=dtype), torch.arange(12) % 3
    opt = torch.optim.SGD(net.parameters(), lr=0.5)
    history = []
    for epoch in range(1, 4):
        loss = torch.nn.functional.cross_entropy(net(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        with torch.no_grad():
            out = net(xv)
        history.append({"epoch": epoch, "train_loss": loss.item(),
                        "train_error": float((net(x).argmax(1) != y).float().mean()),
                        "val_loss": float(torch.nn.functional.cross_entropy(out, yv)),
                        "val_error": float((out.argmax(1) != yv).float().mean())})
    result = learning_curves({"mine": history})
    assert result.runs[0].val_loss == [h["val_loss"] for h in history]
    assert result.runs[0].train_objective == [h["train_loss"] for h in history]
    figs = result.figures()
    assert list(figs) == ["curves"]
    loss_lines = drawn(figs["curves"].axes[1])
    assert loss_lines[0][3] == pytest.approx([h["train_loss"] for h in history])
    import matplotlib.pyplot as plt
    plt.close("all")


def test_the_best_validation_error_carries_its_interval_and_n():
    run = run_curves("a", OLD, val_n=200)
    low, high = wilson_interval(70, 200)  # 35% of 200
    line = curves_analysis.section(CurvesResult([run])).children[1].text
    assert f"a 35.00% (95% interval {100 * low:.2f}–{100 * high:.2f}%, n = 200) at epoch 2" in line
    assert "optimistic" in line  # chosen on the same images


def stepped(epochs=8, drops=(4, 6), peak=None):
    """Records whose lr (at each epoch's last step) drops ÷10 after the epochs in `drops`, or
    rises to `peak` and then decays smoothly."""
    out = []
    for e in range(1, epochs + 1):
        if peak is None:
            lr = 0.1 * 0.1 ** sum(e > d for d in drops)
        else:
            lr = 0.1 * e / peak if e <= peak else 0.1 * (1 - (e - peak) / epochs)
        out.append(record(e, 0.5 / e, 0.6 / e, 1 / e, 1.2 / e, lr=lr))
    return out


def test_the_lr_schedule_marks_come_from_the_recorded_lr_else_from_the_config():
    epochs = list(range(1, 9))
    lr = [r["lr"] for r in stepped()]
    assert lr_marks(epochs, lr, "paper") == ([4.0, 6.0], None)
    assert lr_marks(epochs, lr, None) == ([4.0, 6.0], None)  # a step schedule recognised by its steps
    smooth = [r["lr"] for r in stepped(peak=3)]
    assert lr_marks(epochs, smooth, "onecycle") == ([], 3.0) and lr_marks(epochs, smooth, None) == ([], 3.0)
    assert lr_marks(epochs, [0.1] * 8, "constant") == ([], None)
    cosine = [0.05 * (1 + math.cos(math.pi * e / 8)) for e in epochs]  # decays, halving near the end
    assert lr_marks(epochs, cosine, "cosine") == ([], None) and lr_marks(epochs, cosine, None) == ([], None)
    # No lr in the history: the schedule's definition (probe.train.schedule) over the run's length.
    assert lr_marks(epochs, [None] * 8, "paper", 20) == ([10.0, 15.0], None)
    assert lr_marks(epochs, [None] * 8, "onecycle", 20) == ([], 5.0)
    assert lr_marks(epochs, [None] * 8, "cosine", 20) == ([], None) == lr_marks(epochs, [None] * 8, "paper")
    run = run_curves("r", stepped())
    assert run.lr == lr and run.lr_drops == [4.0, 6.0] and run.lr_peak is None


def test_the_committed_runs_mark_their_onecycle_peak_and_know_their_validation_size():
    for name in ("mnist-resnet20", "mnist-plain20"):
        run = folder_curves(read_model_folder(ROOT / "trained_models" / name))
        assert run.schedule == "onecycle" and run.lr_peak == 5.0 and run.lr_drops == []  # 25% of 20 epochs
        assert run.val_n == 5000 and run.best_epoch == 18


def test_the_figure_marks_the_schedule():
    curves = learning_curves({"a": stepped(), "b": stepped()})
    fig = curves_figure(curves)
    for ax in fig.axes:
        vertical = [l for l in ax.get_lines() if len(set(l.get_xdata())) == 1 and len(l.get_xdata()) == 2]
        assert sorted(l.get_xdata()[0] for l in vertical) == [4.0, 6.0]  # once: both runs share them
    legend_texts = [t.get_text() for lg in fig.legends for t in lg.get_texts()]
    assert "lr drop" in legend_texts and "lr rising to its peak" not in legend_texts
    warm = curves_figure(learning_curves({"a": stepped(peak=3), "b": stepped()}))
    spans = [p for p in warm.axes[0].patches if p.get_x() == 0]
    assert len(spans) == 1 and spans[0].get_width() == pytest.approx(3)
    # the runs differ: the band is in the run's colour, and the key (grey) says so
    assert "lr rising to its peak (tinted: the run's colour)" in [t.get_text() for lg in warm.legends
                                                                  for t in lg.get_texts()]
    assert spans[0].get_facecolor()[:3] != (0.9, 0.9, 0.9)
    import matplotlib.pyplot as plt
    plt.close("all")


def test_each_model_drawn_alone_gets_the_same_axes(tmp_path):
    """The report draws each model's curves in its own figure: shared_settings gives them the
    limits of all the models, so the figures compare by eye."""
    short = [r | {"val_error": r["val_error"] / 10} for r in OLD]
    long = [record(e, 0.8 / e, 0.9 / e, 3 / e, 2.5 / e) for e in range(1, 7)]
    folders = [read_model_folder(with_history(write_tiny_model(tmp_path / n), h)) for n, h in (("a", short), ("b", long))]
    settings = Settings(**curves_analysis.shared_settings(folders))
    assert settings.max_epoch == 6 and settings.error_range == pytest.approx((0.035, 0.9))
    limits = []
    for folder in folders:
        result = curves_analysis.run(Context.of(None, folder=folder), settings)
        fig = curves_analysis.figures(result)["curves"]
        limits.append([(ax.get_xlim(), ax.get_ylim()) for ax in fig.axes])
    both = curves_analysis.figures(curves_analysis.run([Context.of(None, folder=f) for f in folders], Settings()))
    assert limits[0] == limits[1] == [(ax.get_xlim(), ax.get_ylim()) for ax in both["curves"].axes]
    assert CurvesResult.from_json(json.loads(json.dumps(result.to_json()))).axes == result.axes
    import matplotlib.pyplot as plt
    plt.close("all")


# ---- the figure -------------------------------------------------------------------------------
def drawn(ax):
    """(colour, linestyle, x, y) of every line with more than one point."""
    return [(l.get_color(), l.get_linestyle(), list(l.get_xdata()), list(l.get_ydata()))
            for l in ax.get_lines() if len(l.get_xdata()) > 1]


def test_each_run_one_colour_train_dashed_validation_solid():
    curves = learning_curves({"a": OLD, "b": [r | {"val_error": r["val_error"] / 2} for r in OLD]})
    fig = curves_figure(curves)
    err_ax, loss_ax = fig.axes
    lines = drawn(err_ax)
    assert len(lines) == 4  # per run: train and validation
    (ca, sa, xa, ya), (cva, sva, _, yva), (cb, sb, _, yb), (cvb, svb, _, yvb) = lines
    assert ca == cva and cb == cvb and ca != cb
    assert sa == sb == "--" and sva == svb == "-"
    assert xa == [1, 2, 3]
    assert ya == pytest.approx([50, 30, 20]) and yva == pytest.approx([40, 35, 36])  # percent
    assert yvb == pytest.approx([20, 17.5, 18])
    assert [l[3] for l in drawn(loss_ax)][:2] == [[1.5, 1.0, 0.8], [1.2, 1.1, 1.15]]
    assert err_ax.get_yscale() == "log"  # the default: late differences of a fraction of a % show
    # The best epoch is marked on the validation curve.
    marks = [(l.get_xdata()[0], l.get_ydata()[0]) for l in err_ax.get_lines() if len(l.get_xdata()) == 1]
    assert marks == [(2, pytest.approx(35)), (2, pytest.approx(17.5))]
    linear = curves_figure(curves, log=False)
    assert [ax.get_yscale() for ax in linear.axes] == ["linear", "linear"] and linear.axes[0].get_ylim()[0] == 0
    legend_texts = [t.get_text() for lg in fig.legends for t in lg.get_texts()]
    assert legend_texts[:2] == ["a", "b"] and "training" in legend_texts and "validation" in legend_texts
    import matplotlib.pyplot as plt
    plt.close("all")


def test_a_run_of_one_epoch_shows_its_training_point_too():
    """One epoch: a line of one point draws nothing, so training and validation are markers
    (training hollow), and the key shows them."""
    curves = learning_curves({"a": OLD[:1]})
    fig = curves_figure(curves)
    for ax in fig.axes:
        points = [l for l in ax.get_lines() if l.get_marker() in ("s", "D")]
        assert [(l.get_marker(), l.get_linestyle(), list(l.get_xdata())) for l in points] == \
            [("s", "--", [1]), ("D", "-", [1])]
        assert points[0].get_markerfacecolor() == "white"
    key = {t.get_text(): h for lg in fig.legends for t, h in zip(lg.get_texts(), lg.legend_handles)}
    assert key["training"].get_marker() == "s" and key["validation"].get_marker() == "D"
    several = curves_figure(learning_curves({"a": OLD}))
    assert not [l for ax in several.axes for l in ax.get_lines() if l.get_marker() in ("s", "D")]
    import matplotlib.pyplot as plt
    plt.close("all")


def test_a_smoothed_run_shows_its_objective_dotted():
    curves = learning_curves({"s": [r | {"train_objective": r["train_loss"] + 0.2} for r in OLD]},
                             label_smoothing={"s": 0.1})
    fig = curves_figure(curves)
    styles = [l[1] for l in drawn(fig.axes[1])]
    assert styles == ["--", "-", ":"]
    widths = [l.get_linewidth() for l in fig.axes[1].get_lines() if len(l.get_xdata()) > 1]
    assert widths[0] < widths[1]  # training thin, validation bold (He et al.)
    assert drawn(fig.axes[1])[2][3] == pytest.approx([1.7, 1.2, 1.0])
    import matplotlib.pyplot as plt
    plt.close("all")


# ---- the commands -----------------------------------------------------------------------------
def cli(capsys, *args) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as e:
        probe.cli.main([str(a) for a in args])
    out = capsys.readouterr()
    return e.value.code, out.out, out.err


def pdf_is_vector(path: Path) -> str:
    """Assert a PDF has no raster image and return its page's content stream."""
    reader = PdfReader(path)
    assert len(reader.pages) == 1
    page = reader.pages[0]
    assert len(page.images) == 0
    for obj in (page["/Resources"].get("/XObject") or {}).values():
        assert obj.get_object().get("/Subtype") != "/Image"
    assert b"/Subtype /Image" not in Path(path).read_bytes()  # matplotlib writes no object streams
    content = page.get_contents().get_data().decode("latin1")
    assert not re.search(r"\bBI\b", content)  # no inline image either
    return content


def test_curves_command_on_real_runs(trained, tmp_path, capsys):
    out = tmp_path / "curves"
    runs = [trained / "tiny-resnet8", trained / "tiny-plain8"]
    code, stdout, err = cli(capsys, "curves", *runs, "--out", out)
    assert code == 0, err
    assert "tiny-resnet8: 3 epochs" in stdout and "tiny-plain8: 3 epochs" in stdout
    content = pdf_is_vector(out / "curves.pdf")
    # Path operators: moveto, lineto, stroke; the curves are line art.
    assert len(re.findall(r"[\d.]+ [\d.]+ m\b", content)) >= 4
    assert len(re.findall(r"[\d.]+ [\d.]+ l\b", content)) >= 8
    assert re.search(r"\bS\b", content)
    assert (out / "curves.png").stat().st_size > 10_000
    doc = json.loads((out / "results.json").read_text())
    # the CLI's own --log default (probe.cli), the axes' limits those of the runs
    assert doc["analysis"] == "curves" and doc["settings"] == Settings(log=doc["settings"]["log"]).to_json()
    assert [m["name"] for m in doc["models"]] == ["tiny-resnet8", "tiny-plain8"]
    assert doc["models"][0]["weights_sha256"] == read_model_folder(runs[0]).weights_sha256()
    assert doc["figures"] == ["curves.pdf", "curves.png"]
    for run, path in zip(doc["results"]["runs"], runs):
        history = json.loads((path / "history.json").read_text())
        assert run["epoch"] == [r["epoch"] for r in history]
        for key in ("train_error", "val_error", "train_loss", "val_loss", "train_objective", "lr"):
            assert run[key] == [r[key] for r in history], key
        assert run["val_n"] == read_model_folder(path).meta["split_sizes"]["val"]
    plain = doc["results"]["runs"][1]
    assert plain["label_smoothing"] == 0.1
    assert all(o > l for o, l in zip(plain["train_objective"], plain["train_loss"]))


def test_curves_default_folders_and_run_names(trained, tmp_path, capsys, monkeypatch):
    shutil.copytree(trained / "tiny-resnet8", tmp_path / "trained_models" / "tiny-resnet8")
    shutil.copytree(trained / "tiny-plain8", tmp_path / "trained_models" / "tiny-plain8")
    monkeypatch.chdir(tmp_path)
    code, stdout, err = cli(capsys, "curves", "tiny-resnet8", "--log")  # a name in trained_models/
    assert code == 0, err
    doc = json.loads((tmp_path / "reports" / "tiny-resnet8" / "curves" / "results.json").read_text())
    assert doc["settings"]["log"] is True and "log scale" in stdout
    code, _, err = cli(capsys, "curves", "trained_models/tiny-resnet8", "tiny-plain8")
    assert code == 0, err
    assert (tmp_path / "reports" / "compare" / "curves" / "curves.pdf").is_file()
    code, _, err = cli(capsys, "compare", "tiny-resnet8", "tiny-plain8")
    assert code == 0, err
    assert (tmp_path / "reports" / "compare" / "table" / "results.json").is_file()


def test_compare_table(trained, tmp_path, capsys):
    runs = [trained / "tiny-resnet8", trained / "tiny-plain8"]
    code, stdout, err = cli(capsys, "compare", *runs, "--out", tmp_path / "cmp")
    assert code == 0, err
    header, rule, *rows = stdout.splitlines()[:4]
    for column in ("run", "architecture", "params", "dataset", "epochs", "train time", "val err",
                   "test err", "images/s"):
        assert column in header
    metas = [json.loads((r / "meta.json").read_text()) for r in runs]
    for row, meta in zip(rows, metas):
        assert row.startswith(meta["name"])
        assert f"{meta['parameters']:,}" in row and "×0.25" in row and " mnist " in row
        assert f"{100 * meta['metrics']['test']['error']:.2f}%" in row
        assert f"{100 * meta['metrics']['val']['error']:.2f}%" in row
        assert f"{meta['images_per_second']:,.0f}" in row
    assert "settings that differ: arch resnet8 / plain8; label_smoothing 0.0 / 0.1" in stdout
    doc = json.loads((tmp_path / "cmp" / "results.json").read_text())
    assert doc["analysis"] == "compare"
    r = doc["results"]
    assert [x["run"] for x in r["runs"]] == ["tiny-resnet8", "tiny-plain8"]
    for x, meta in zip(r["runs"], metas):
        assert x["parameters"] == meta["parameters"] and x["epochs"] == 3 == meta["epochs_done"]
        assert x["test_error"] == meta["metrics"]["test"]["error"]
        assert x["val_error"] == meta["metrics"]["val"]["error"]
        assert x["wall_seconds"] == meta["wall_seconds"] and x["images_per_second"] == meta["images_per_second"]
    assert r["differing_settings"] == {"arch": ["resnet8", "plain8"], "label_smoothing": [0.0, 0.1]}
    assert r["table"] in stdout
    # Times on a shared machine: the load it ran under is recorded and shown under the table.
    for x, meta in zip(r["runs"], metas):
        load = meta["load_average"]
        assert len(load["start"]) == len(load["end"]) == 3 and load["cpus"] >= 1 and x["load_average"] == load
        assert f"{x['run']}: load {load['start'][0]:.1f} → {load['end'][0]:.1f} on {load['cpus']} CPUs" in stdout
    assert "measured on shared machines" in stdout


def test_compare_of_folders_with_missing_numbers(tmp_path):
    a = write_tiny_model(tmp_path / "a")
    b = with_history(write_tiny_model(tmp_path / "b"), OLD)
    meta = json.loads((b / "meta.json").read_text())
    del meta["metrics"], meta["parameters"]
    (b / "meta.json").write_text(json.dumps(meta))
    out = run_compare([a, b], out=tmp_path / "o")
    rows = out.result.runs
    assert rows[1]["epochs"] == 3 and rows[1]["test_error"] is None and rows[1]["parameters"] is None
    assert rows[0]["epochs"] is None  # no meta epochs, no history
    text = compare_text(rows)
    assert text.splitlines()[3].count("—") >= 4
    assert differing_settings(rows) == {}
    assert "settings that differ: none" in out.summary()


def test_split_seed_defaults_to_the_seed_as_the_loader_reads_it(tmp_path):
    a = write_tiny_model(tmp_path / "a")  # train: {"seed": 0}, no split_seed
    b = write_tiny_model(tmp_path / "b")
    meta = json.loads((b / "meta.json").read_text())
    meta["train"]["split_seed"] = 0
    (b / "meta.json").write_text(json.dumps(meta))
    rows = run_compare([a, b], out=tmp_path / "o").result.runs
    assert rows[0]["train"]["split_seed"] == rows[1]["train"]["split_seed"] == 0


def test_two_runs_of_one_name_are_told_apart_by_path(tmp_path):
    a = with_history(write_tiny_model(tmp_path / "x" / "run"), OLD)
    b = with_history(write_tiny_model(tmp_path / "y" / "run"), OLD)
    out = run_compare([a, b], out=tmp_path / "o")
    assert [r["run"] for r in out.result.runs] == [str(a), str(b)]


def bad_runs(tmp_path, trained):
    plain = tmp_path / "not-a-model"
    plain.mkdir()
    no_history = write_tiny_model(tmp_path / "no-history")
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    good = trained / "tiny-resnet8"
    return {
        "not a model": ([plain], "meta.json: file not found"),
        "no such run": ([tmp_path / "nowhere"], "no such model folder"),
        "the same run twice": ([good, good], "the same run is given twice"),
        "no history": ([no_history], "no history.json"),
        "out is a file": ([good, "--out", a_file], "is a file, not a folder"),
    }


@pytest.mark.parametrize("command", ["curves", "compare"])
@pytest.mark.parametrize("case", ["not a model", "no such run", "the same run twice", "no history",
                                  "out is a file"])
def test_bad_runs_are_one_line_and_exit_code_2(command, case, trained, tmp_path, capsys, monkeypatch):
    if command == "compare" and case == "no history":
        pytest.skip("compare needs no history: its numbers come from meta.json")
    monkeypatch.chdir(tmp_path)
    args, words = bad_runs(tmp_path, trained)[case]
    code, stdout, err = cli(capsys, command, *args)
    assert code == 2
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert words in err and "Traceback" not in err + stdout


def test_no_run_is_a_usage_error(capsys):
    code, _, err = cli(capsys, "curves")
    assert code == 2 and err.startswith("error: ") and "runs" in err.lower()
    with pytest.raises(ConfigError, match="at least one run"):
        resolve_runs([])


def test_compare_names_adversarial_training_and_the_precision_that_ran():
    """The robust model differs from the others in its training attack, which compare left out;
    "auto" is what was asked, not what ran; settings that changed nothing are not differences."""
    from probe.analysis.compare import compare
    root = Path(__file__).resolve().parents[1] / "trained_models"
    names = ["mnist-resnet20", "mnist-resnet20-robust"]
    diff = compare([read_model_folder(root / n) for n in names]).differing_settings
    assert diff["adversarial"] == [None, "fgsm-rs"] and diff["adv_eps"] == [None, 0.3]
    assert "auto" not in diff.get("precision", []) and "adv_steps" not in diff and "split_by" not in diff
    assert "warmup_iters" not in diff
