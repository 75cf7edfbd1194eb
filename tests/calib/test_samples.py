import sys

import numpy as np
import pytest

from lightexport.calib import ImageFolder, Preprocess, sample_photos, samples, write_sample_photos
from lightexport.errors import BackendUnavailableError
from lightexport.parity import make_inputs


def test_sample_photos_are_rgb_uint8():
    photos = sample_photos()
    assert len(photos) >= 8  # parity's default of 8 inputs is all real photos
    assert all(p.ndim == 3 and p.shape[2] == 3 and p.dtype == np.uint8 and min(p.shape[:2]) >= 150 for p in photos)
    assert sum(not np.array_equal(p[..., 0], p[..., 1]) for p in photos) >= 6  # mostly color photos
    assert not photos[0].flags.writeable  # shared through a cache: nobody may alter it


def test_written_photos_form_a_calibration_folder(tmp_path):
    folder = write_sample_photos(tmp_path / "photos", ".webp")
    assert sorted(p.name for p in folder.iterdir()) == sorted(f"{n}.webp" for n in samples.PHOTO_NAMES)
    assert len(ImageFolder(folder, Preprocess(input_size=16)).select()) == len(samples.PHOTO_NAMES)


def test_decision_set_pool_is_the_documented_photos():
    """The decision crops (and so every agreement figure) are drawn from the same 19 photos on every install:
    scikit-image's, matplotlib's two and scikit-learn's two (a base dependency for that reason)."""
    names = [name for name, _ in samples.photo_pool()]
    assert len(names) == 19 and len(set(names)) == 19, names
    assert sum(n.startswith("matplotlib:") for n in names) == 2 and sum(n.startswith("sklearn:") for n in names) == 2


@pytest.fixture
def no_skimage(monkeypatch):
    monkeypatch.setitem(sys.modules, "skimage", None)
    monkeypatch.setitem(sys.modules, "skimage.data", None)
    samples._photos.cache_clear()
    yield
    samples._photos.cache_clear()


def test_missing_scikit_image_is_a_clear_error(no_skimage):
    with pytest.raises(BackendUnavailableError, match="pip install scikit-image"):
        sample_photos()


def test_parity_inputs_fall_back_to_noise_without_scikit_image(no_skimage):
    with pytest.warns(UserWarning, match="using noise inputs only"):
        inputs = make_inputs(Preprocess(input_size=16), 2)
    np.testing.assert_array_equal(np.concatenate(inputs), np.concatenate(make_inputs(Preprocess(16), 2, photos=False)))
