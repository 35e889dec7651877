"""The test errors of models compared (probe.analysis.compare): each error with its Wilson
interval and n, the errors two models share and the ones each alone makes, an exact McNemar
test checked by hand, the words that say what it means; results of different images refused;
the timing note under the comparison table."""
import sys
from pathlib import Path

import pytest

from probe.analysis.compare import (compare_errors, compare_row, errors_section, p_text, pair_sentence,
                                    table_parts, timing_note)
from probe.analysis.misclassified import MisclassifiedResult
from probe.errors import ConfigError
from probe.methods.confusion import mcnemar_exact, wilson_interval
from probe.models.folder import read_model_folder
from probe.presentation import Table, Text

sys.path.insert(0, str(Path(__file__).parent))
ROOT = Path(__file__).resolve().parents[1]
from test_model_folder import write_tiny_model  # noqa: E402


@pytest.mark.parametrize("b,c,p", [(3, 0, 0.25), (0, 3, 0.25), (5, 5, 1.0), (10, 2, 79 / 2048),
                                   (0, 0, 1.0), (1, 0, 1.0), (6, 0, 2 / 64)])
def test_mcnemar_exact_by_hand(b, c, p):
    """Twice the lower binomial tail of min(b, c) out of b + c at 1/2: (10, 2) sums
    C(12, 0) + C(12, 1) + C(12, 2) = 79 of 4096, times 2 ≈ 0.0386."""
    assert mcnemar_exact(b, c) == pytest.approx(p, rel=1e-12)


def test_mcnemar_exact_is_exact_far_out_and_checks_its_counts():
    assert mcnemar_exact(2000, 1000) < 1e-70 and mcnemar_exact(1500, 1500) == 1.0  # no overflow
    assert mcnemar_exact(13, 17) == pytest.approx(0.5847, abs=1e-4)  # the committed models' counts
    for bad in ((-1, 2), (1.5, 2), (True, 2)):
        with pytest.raises(ValueError, match="not a count"):
            mcnemar_exact(*bad)


def result(name: str, wrong: list[int], n: int = 100, split: str | None = "test", labels=None,
           shown: int | None = None) -> MisclassifiedResult:
    """A misclassified result on n images of 3 classes whose wrong images are `wrong`."""
    labels = labels or [i % 3 for i in range(n)]
    records = [{"index": i, "true": str(labels[i]), "predicted": str((labels[i] + 1) % 3), "p_predicted": 0.9,
                "second": str(labels[i]), "p_second": 0.1, "p_true": 0.1} for i in wrong]
    ci = wilson_interval(n - len(wrong), n)
    return MisclassifiedResult(model=name, classes=["0", "1", "2"], display_names=["0", "1", "2"], codes=[],
                               split=split, n=n, wrong=len(wrong), error=len(wrong) / n,
                               error_ci95=[1 - ci[1], 1 - ci[0]], misclassified=records[:shown],
                               confusion_matrix=[], per_class=[], most_confused=[])


def test_shared_and_own_errors_of_a_constructed_case():
    a = result("a", [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12])  # 12 wrong
    b = result("b", [1, 2, 50])  # 2 shared with a, 1 its own
    c = result("c", [])
    stats = compare_errors([a, b, c])
    assert stats["split"] == "test" and stats["n"] == 100 and stats["test"] == "exact McNemar, two-sided"
    models = {m["name"]: m for m in stats["models"]}
    assert models["a"]["errors"] == 12 and models["a"]["error"] == 0.12 and models["c"]["errors"] == 0
    low, high = wilson_interval(88, 100)
    assert models["a"]["ci95"] == pytest.approx([1 - high, 1 - low]) and models["a"]["n"] == 100
    pairs = {(p["a"], p["b"]): p for p in stats["pairs"]}
    assert list(pairs) == [("a", "b"), ("a", "c"), ("b", "c")]
    ab = pairs["a", "b"]
    assert (ab["both"], ab["only_a"], ab["only_b"], ab["discordant"]) == (2, 10, 1, 11)
    assert ab["p_value"] == pytest.approx(2 * (1 + 11) / 2 ** 11) and ab["significant"]
    ac = pairs["a", "c"]
    assert (ac["both"], ac["only_a"], ac["only_b"]) == (0, 12, 0) and ac["p_value"] == pytest.approx(2 / 4096)
    bc = pairs["b", "c"]
    assert (bc["only_a"], bc["only_b"]) == (3, 0) and bc["p_value"] == 0.25 and not bc["significant"]


def test_the_words_say_what_the_test_found():
    same = {"a": "r20", "b": "p20", "both": 21, "only_a": 13, "only_b": 17, "discordant": 30,
            "p_value": mcnemar_exact(13, 17), "significant": False}
    line = pair_sentence(same, 10_000, "test")
    assert line == ("r20 and p20 both misclassify 21 of the same 10,000 test images; 13 are misclassified "
                    "by r20 alone, 17 by p20 alone. Exact McNemar test on these 30 images: p = 0.58, "
                    "not a significant difference at the 5% level.")
    apart = same | {"only_a": 10, "only_b": 2, "discordant": 12, "p_value": mcnemar_exact(10, 2), "significant": True}
    assert pair_sentence(apart, 10_000, "test").endswith(
        "p = 0.039, a significant difference at the 5% level (p20 makes fewer errors).")
    assert p_text(0.0004) == "p < 0.001" and p_text(0.004) == "p = 0.004" and p_text(1.0) == "p = 1.00"


def test_the_section_holds_errors_intervals_pairs_and_words():
    a, b = result("a", list(range(12))), result("b", [0, 1, 50])
    s = errors_section([a, b])
    assert s.title == "Test error compared"
    errors, pairs, words = s.children
    assert isinstance(errors, Table) and isinstance(pairs, Table) and isinstance(words, Text)
    low, high = wilson_interval(88, 100)
    assert errors.rows[0] == ["a", "100", "12", "12.00%", f"{100 * (1 - high):.2f}–{100 * (1 - low):.2f}%"]
    assert pairs.columns[-1] == "McNemar p" and pairs.rows == [["a", "b", "2", "10", "1", "0.012"]]
    assert "significant difference at the 5% level (b makes fewer errors)" in words.text
    three = errors_section([a, b, result("c", [5])])
    assert "not corrected for multiple comparisons" in three.children[-1].text
    assert len(three.children[1].rows) == 3
    assert errors_section([result("a", [1], split="val"), result("b", [2], split="val")]).title == "Val error compared"


def test_results_of_different_images_or_cut_short_are_refused():
    a = result("a", [1, 2])
    with pytest.raises(ConfigError, match="needs the results of two models"):
        compare_errors([a])
    with pytest.raises(ConfigError, match="not run on the same images"):
        compare_errors([a, result("b", [1], split="val")])
    with pytest.raises(ConfigError, match="not run on the same images"):
        compare_errors([a, result("b", [1], n=99)])
    with pytest.raises(ConfigError, match="different images"):  # image 1 is of another class for b
        compare_errors([a, result("b", [1], labels=[(i + 1) % 3 for i in range(100)])])
    with pytest.raises(ConfigError, match="--max"):
        compare_errors([a, result("b", [1, 2, 3], shown=2)])


def test_the_timing_note_names_the_load_or_says_times_do_not_compare(tmp_path):
    folder = read_model_folder(write_tiny_model(tmp_path / "a"))
    row = compare_row(folder)
    assert row["load_average"] is None
    note = timing_note([row])
    assert note == "Train time and images/s were measured on shared machines: they are not comparable across runs."
    loaded = row | {"run": "b", "load_average": {"start": [3.14, 2, 1], "end": [2.9, 2, 1], "cpus": 16}}
    note = timing_note([row, loaded])
    assert "b: load 3.1 → 2.9 on 16 CPUs; not recorded for a)" in note and "except at a similar load" in note
    table, text = table_parts([row, loaded])  # the tiny model's meta has no n: no intervals
    assert isinstance(table, Table) and len(table.rows) == 2 and text.text == note


def test_the_table_errors_carry_their_intervals_and_n():
    rows = [compare_row(read_model_folder(ROOT / "trained_models" / name)) for name in ("mnist-resnet20", "mnist-plain20")]
    assert [(r["val_n"], r["test_n"]) for r in rows] == [(5000, 10_000)] * 2
    table, errors, timing = table_parts(rows)
    low, high = wilson_interval(10_000 - 34, 10_000)
    assert f"mnist-resnet20 val 0.37–0.78% (n = 5,000), test {100 * (1 - high):.2f}–{100 * (1 - low):.2f}% (n = 10,000)" \
        in errors.text
    assert "mnist-plain20 val 0.44–0.88% (n = 5,000)" in errors.text and "shared machines" in timing.text
