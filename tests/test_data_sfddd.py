import csv
import os
import warnings

import numpy as np
import pytest
import torch

import probe.data.sfddd as sfddd
from fixtures import jpeg_bytes
from probe.data.sfddd import DataWarning, load_kaggle_test, load_labelled
from probe.errors import DataError


def test_load_labelled(sfddd_dir):
    images, drivers = load_labelled(sfddd_dir)
    assert images.images.shape == (200, 3, 48, 64) and images.images.dtype == torch.uint8
    assert images.class_counts() == [20] * 10
    assert len(set(drivers)) == 10 and len(drivers) == 200
    rows = {r["img"]: r for r in csv.DictReader(open(sfddd_dir / "driver_imgs_list.csv"))}
    for name, label, driver in zip(images.names, images.labels.tolist(), drivers):
        assert rows[name]["classname"] == f"c{label}" and rows[name]["subject"] == driver


def test_resize_matches_pillow(sfddd_dir):
    """img_0 is 640×480: draft mode + resize lands close to a plain full-size resize."""
    from PIL import Image

    images, _ = load_labelled(sfddd_dir)
    i = images.names.index("img_0.jpg")
    with Image.open(sfddd_dir / "imgs/train/c0/img_0.jpg") as im:
        ref = np.asarray(im.convert("RGB").resize((64, 48), Image.Resampling.BOX)).transpose(2, 0, 1)
    diff = np.abs(images.images[i].numpy().astype(int) - ref.astype(int))
    assert diff.mean() < 8, diff.mean()


def test_data_dir_may_be_imgs(sfddd_dir):
    a, _ = load_labelled(sfddd_dir)
    b, _ = load_labelled(sfddd_dir / "imgs")
    assert torch.equal(a.images, b.images)


def test_kaggle_test(sfddd_dir):
    t = load_kaggle_test(sfddd_dir)
    assert t.images.shape == (6, 3, 48, 64) and t.labels.tolist() == [-1] * 6
    assert t.names[0] == "img_100000.jpg"


def test_cache_hit_does_not_decode(sfddd_dir, monkeypatch):
    first, _ = load_labelled(sfddd_dir)
    assert len(list((sfddd_dir / ".probe-cache").glob("sfddd-64x48-train-*.npy"))) == 1
    monkeypatch.setattr(sfddd, "decode_jpeg", lambda p: pytest.fail(f"decoded {p} despite the cache"))
    second, _ = load_labelled(sfddd_dir)
    assert torch.equal(first.images, second.images)


def test_cache_invalidated_by_added_file(sfddd_dir, monkeypatch):
    load_labelled(sfddd_dir)
    (sfddd_dir / "imgs/train/c3/img_new.jpg").write_bytes(jpeg_bytes(999))
    with open(sfddd_dir / "driver_imgs_list.csv", "a") as f:
        f.write("p002,c3,img_new.jpg\n")
    decoded = []
    real = sfddd.decode_jpeg
    monkeypatch.setattr(sfddd, "decode_jpeg", lambda p: decoded.append(p.name) or real(p))
    images, _ = load_labelled(sfddd_dir)
    assert len(images) == 201 and "img_new.jpg" in decoded
    caches = list((sfddd_dir / ".probe-cache").glob("sfddd-64x48-train-*.npy"))
    assert len(caches) == 1  # the stale one is gone


def test_cache_invalidated_by_changed_file(sfddd_dir):
    before, _ = load_labelled(sfddd_dir)
    path = next((sfddd_dir / "imgs/train/c1").glob("*.jpg"))
    path.write_bytes(jpeg_bytes(12345))
    after, _ = load_labelled(sfddd_dir)
    i = after.names.index(path.name)
    assert not torch.equal(before.images[i], after.images[i])


def test_damaged_cache_is_rebuilt(sfddd_dir):
    first, _ = load_labelled(sfddd_dir)
    cache = next((sfddd_dir / ".probe-cache").glob("*.npy"))
    cache.write_bytes(b"not a numpy file")
    again, _ = load_labelled(sfddd_dir)
    assert torch.equal(first.images, again.images)


def test_read_only_data_falls_back_to_user_cache(sfddd_dir, monkeypatch):
    real = sfddd.atomic_writer
    data_cache = sfddd_dir / ".probe-cache"

    def writer(path):
        if data_cache in path.parents:
            raise PermissionError(13, "read-only", str(path))
        return real(path)

    monkeypatch.setattr(sfddd, "atomic_writer", writer)
    load_labelled(sfddd_dir)
    assert not data_cache.exists()
    user = sfddd._cache_dirs(sfddd_dir)[1]  # under $PROBE_CACHE_DIR, a tmp folder in tests
    assert len(list(user.glob("sfddd-64x48-train-*.npy"))) == 1
    monkeypatch.setattr(sfddd, "decode_jpeg", lambda p: pytest.fail("the user cache was not read"))
    load_labelled(sfddd_dir)


def test_unknown_class_folder(sfddd_dir):
    (sfddd_dir / "imgs/train/c10").mkdir()
    with pytest.raises(DataError, match="unknown class folder 'c10'"):
        load_labelled(sfddd_dir)


def test_unknown_class_in_csv(sfddd_dir):
    with open(sfddd_dir / "driver_imgs_list.csv", "a") as f:
        f.write("p002,foo,img_0.jpg\n")
    with pytest.raises(DataError, match=r"line 202: class 'foo'"):
        load_labelled(sfddd_dir)


def test_missing_image_is_an_error(sfddd_dir):
    next((sfddd_dir / "imgs/train/c4").glob("*.jpg")).unlink()
    with pytest.raises(DataError, match="1 images listed in .* are not in .*incomplete"):
        load_labelled(sfddd_dir)


def test_unlisted_image_is_left_out_with_a_warning(sfddd_dir):
    (sfddd_dir / "imgs/train/c4/stray.jpg").write_bytes(jpeg_bytes(7))
    with pytest.warns(DataWarning, match="1 JPEGs .* not in"):
        images, _ = load_labelled(sfddd_dir)
    assert len(images) == 200 and "stray.jpg" not in images.names


def test_corrupt_jpeg(sfddd_dir):
    path = next((sfddd_dir / "imgs/train/c5").glob("*.jpg"))
    path.write_bytes(b"\xff\xd8 not really")
    with pytest.raises(DataError, match=f"{path.name}: not a readable JPEG"):
        load_labelled(sfddd_dir)


def test_bad_csv_and_layout(sfddd_dir, tmp_path):
    csv_path = sfddd_dir / "driver_imgs_list.csv"
    text = csv_path.read_text()
    csv_path.write_text("driver,class,file\n" + text.split("\n", 1)[1])
    with pytest.raises(DataError, match="header driver,class,file, expected subject,classname,img"):
        load_labelled(sfddd_dir)
    csv_path.unlink()
    with pytest.raises(DataError, match="driver_imgs_list.csv not found"):
        load_labelled(sfddd_dir)
    with pytest.raises(DataError, match="no SFDDD in .*kaggle competitions download"):
        load_labelled(tmp_path / "empty")


def test_no_warnings_on_clean_data(sfddd_dir):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_labelled(sfddd_dir)


def _write_bytes_name(folder, name: bytes, data: bytes) -> None:
    """A file whose name is not UTF-8 (as a Windows zip or an old Latin-1 disk leaves them)."""
    fd = os.open(os.path.join(os.fsencode(folder), name), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def test_kaggle_test_with_a_name_that_is_not_utf8(sfddd_dir):
    """Hashing the names for the cache key stopped with UnicodeEncodeError (issue 18); the file is
    left out with a warning that shows its name, and the others load."""
    _write_bytes_name(sfddd_dir / "imgs/test", b"img_\xff.jpg", jpeg_bytes(7))
    with pytest.warns(DataWarning, match=r"1 JPEGs in .*imgs/test have names that are not UTF-8 and "
                                         r"are left out \(img_\\xff\.jpg\); rename them"):
        t = load_kaggle_test(sfddd_dir)
    assert len(t) == 6 and all(n.isprintable() and n.encode() for n in t.names)


def test_train_image_with_a_name_that_is_not_utf8(sfddd_dir):
    _write_bytes_name(sfddd_dir / "imgs/train/c2", b"img_\xe9t\xe9.jpg", jpeg_bytes(8))
    with pytest.warns(DataWarning, match=r"c2 have names that are not UTF-8 .*\(img_\\xe9t\\xe9\.jpg\)"):
        images, _ = load_labelled(sfddd_dir)
    assert len(images) == 200


def test_cli_data_check_with_a_name_that_is_not_utf8(sfddd_dir):
    """The whole path a user takes: `probe data check` prints one warning line and the counts."""
    import subprocess
    import sys
    from pathlib import Path
    _write_bytes_name(sfddd_dir / "imgs/test", b"img_\xff.jpg", jpeg_bytes(7))
    root = Path(__file__).resolve().parents[1]
    r = subprocess.run([sys.executable, str(root / "cli.py"), "data", "check", "--dataset", "sfddd",
                        "--data-dir", str(sfddd_dir)], capture_output=True, cwd=root, timeout=300)
    err = r.stderr.decode("utf-8")
    assert r.returncode == 0, err
    assert "Traceback" not in err and err.count("\n") == 1 and "img_\\xff.jpg" in err


@pytest.mark.parametrize("first, message", [
    ('"p002,c0,img_0.jpg\n', r"header p002,c0,img_0.jpg\\nsubject,classname"),  # a quoted field over every line
    ('"', r"header ubject,classname,img\\np002"),
])
def test_csv_messages_are_one_line(sfddd_dir, first, message):
    """Found by the fuzz suite: a quote opened in the CSV's first line makes one field of the
    whole file, and the header message showed it as it was: an error of eleven lines."""
    path = sfddd_dir / "driver_imgs_list.csv"
    text = path.read_text()
    path.write_text(first + text[1:] if first == '"' else first + text)
    with pytest.raises(DataError, match=message) as e:
        load_labelled(sfddd_dir)
    assert "\n" not in str(e.value)


def test_listed_twice_in_a_quoted_field_is_one_line(sfddd_dir):
    path = sfddd_dir / "driver_imgs_list.csv"
    path.write_text(path.read_text() + 'p002,c0,"img_0\n.jpg"\np002,c0,"img_0\n.jpg"\n')
    with pytest.raises(DataError, match=r"c0/img_0\\n\.jpg listed twice") as e:
        load_labelled(sfddd_dir)
    assert "\n" not in str(e.value)
