import numpy as np
import pytest
from PIL import Image

from lightexport.calib import EXTENSIONS, CalibrationWarning, ImageFolder, Preprocess, write_sample_photos
from lightexport.errors import CalibrationError, UsageError

SMALL = Preprocess(input_size=8, crop_pct=1.0)


def _image(path, value: int = 0, size=(12, 10)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (value, value, value)).save(path)
    return path


@pytest.fixture
def mixed(tmp_path):
    """Images of every extension in any case, nested, next to files that must be ignored."""
    names = ["a.jpg", "B.JPEG", "sub/c.png", "sub/deeper/d.WebP", "sub/e.bmp", "f.Png"]
    for i, name in enumerate(names):
        _image(tmp_path / name, 20 * i)
    (tmp_path / "notes.txt").write_text("not an image")
    _image(tmp_path / ".hidden.jpg")
    _image(tmp_path / ".cache" / "g.jpg")
    return tmp_path


def test_recursive_scan_with_mixed_extensions(mixed):
    folder = ImageFolder(mixed, SMALL)
    assert [p.relative_to(mixed).as_posix() for p in folder.paths] == [
        "B.JPEG", "a.jpg", "f.Png", "sub/c.png", "sub/deeper/d.WebP", "sub/e.bmp",
    ]  # fmt: skip
    assert len(folder) == 6
    top = ImageFolder(mixed, SMALL, recursive=False)
    assert [p.name for p in top.paths] == ["B.JPEG", "a.jpg", "f.Png"]


def test_selection_is_deterministic_and_spread(tmp_path):
    for cls in range(10):  # ImageNet layout: one folder per class, sorted by class
        for i in range(5):
            _image(tmp_path / f"class{cls}" / f"{i}.png", cls * 20)
    first, again = ImageFolder(tmp_path, SMALL).select(10), ImageFolder(tmp_path, SMALL).select(10)
    assert first == again and first == sorted(first)
    assert len({p.parent.name for p in first}) > 2  # not the first two classes, as "first N" would give
    assert ImageFolder(tmp_path, SMALL, seed=1).select(10) != first
    assert ImageFolder(tmp_path, SMALL).select() == ImageFolder(tmp_path, SMALL).paths


def test_batches(mixed):
    folder = ImageFolder(mixed, SMALL)
    assert [b.shape for b in folder.batches(4)] == [(4, 3, 8, 8), (2, 3, 8, 8)]
    assert [b.shape for b in folder.batches(4, drop_last=True)] == [(4, 3, 8, 8)]
    assert [b.shape for b in folder.batches(2, n=3)] == [(2, 3, 8, 8), (1, 3, 8, 8)]
    stacked = np.concatenate(list(folder.batches(4)))
    np.testing.assert_array_equal(stacked, np.concatenate([SMALL(p) for p in folder.select()]))
    with pytest.raises(UsageError, match="batch size"):
        folder.batches(0)
    with pytest.raises(CalibrationError, match="a batch of 8 needs at least 8 images; got 6"):
        folder.batches(8, drop_last=True)


def test_real_photos_folder(tmp_path):
    folder = ImageFolder(write_sample_photos(tmp_path / "photos"), Preprocess(input_size=32))
    (batch,) = folder.batches(16, n=9)
    assert batch.shape == (9, 3, 32, 32) and np.isfinite(batch).all()
    assert -2.2 < batch.min() < -1.5 and 2.0 < batch.max() < 2.7  # the normalized range of real pixels


def test_missing_folder(tmp_path):
    with pytest.raises(CalibrationError, match=r"calibration folder .*nowhere does not exist"):
        ImageFolder(tmp_path / "nowhere")
    (tmp_path / "file.jpg").write_text("x")
    with pytest.raises(CalibrationError, match=r"calibration source .*file.jpg is not a folder"):
        ImageFolder(tmp_path / "file.jpg")


def test_empty_folder_says_what_was_looked_for(tmp_path):
    with pytest.raises(CalibrationError) as caught:
        ImageFolder(tmp_path)
    message = str(caught.value)
    assert f"no images in calibration folder {tmp_path} and its subfolders" in message
    assert " ".join(EXTENSIONS) in message and message.endswith("it is empty")


def test_folder_of_non_images_names_them(tmp_path):
    for i in range(7):
        (tmp_path / f"doc{i}.txt").write_text("x")
    with pytest.raises(CalibrationError, match=r"it holds 7 other file\(s\): doc0.txt, .*doc4.txt, and 2 more$"):
        ImageFolder(tmp_path, recursive=False)


def test_fewer_images_than_asked_uses_what_the_folder_holds(mixed):
    folder = ImageFolder(mixed)
    with pytest.warns(CalibrationWarning, match=r"asks for 50 images but .* holds 6; calibrating on those 6"):
        chosen = folder.select(50)
    assert len(chosen) == len(folder.select()) and len(chosen) <= 6
    with pytest.raises(UsageError, match="at least 1"):
        ImageFolder(mixed).select(0)


@pytest.fixture
def with_corrupt(tmp_path):
    for i in range(4):
        _image(tmp_path / f"good{i}.jpg", 40 * i)
    (tmp_path / "bad.png").write_text("not an image")
    good = (tmp_path / "good0.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(good[: len(good) // 2])  # truncated: only a full decode notices
    return tmp_path


def test_corrupt_images_are_skipped_with_a_warning(with_corrupt):
    folder = ImageFolder(with_corrupt, SMALL)
    with pytest.warns(CalibrationWarning, match=r"skipped 2 unreadable image\(s\)") as record:
        chosen = folder.select()  # all readable ones
    assert [p.name for p in chosen] == ["good0.jpg", "good1.jpg", "good2.jpg", "good3.jpg"]
    assert set(folder.skipped) == {with_corrupt / "bad.png", with_corrupt / "cut.jpg"}
    (skipped,) = [str(w.message) for w in record if "unreadable" in str(w.message)]  # beside the tiny-image one
    assert "bad.png (not a recognizable image)" in skipped
    assert "cut.jpg (" in skipped  # PIL words truncation differently per format
    assert len(list(folder.batches(3))) == 2  # known-bad files are not decoded or warned about again


def test_too_few_readable_images_fail_naming_the_bad_ones(with_corrupt):
    folder = ImageFolder(with_corrupt, SMALL)
    with pytest.warns(CalibrationWarning), pytest.raises(CalibrationError) as caught:
        folder.select(5)
    message = str(caught.value)
    assert "calibration needs 5 images (--calib-size) but only 4 of the 6" in message
    assert "unreadable: bad.png (not a recognizable image), cut.jpg (" in message


def test_folder_of_only_unreadable_images(tmp_path):
    (tmp_path / "a.jpg").write_text("x")
    (tmp_path / "b.png").write_text("y")
    with pytest.warns(CalibrationWarning), pytest.raises(CalibrationError) as caught:
        ImageFolder(tmp_path).select()
    assert str(caught.value) == (
        f"calibration needs at least one readable image but only 0 of the 2 in {tmp_path} are readable; "
        "unreadable: a.jpg (not a recognizable image), b.png (not a recognizable image)"
    )
