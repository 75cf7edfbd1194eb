"""Issue #11 item 8: a tiny file declaring a huge or absurdly thin image is skipped before it is decoded."""

import resource

import numpy as np
import pytest
from PIL import Image

from lightexport.calib import CalibrationWarning, ImageFolder, Preprocess
from lightexport.calib.preprocess import MAX_ASPECT, check_dimensions
from lightexport.errors import CalibrationError


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@pytest.mark.parametrize("size", [(600, 1), (1, 20000), (100000, 1)])
def test_thin_images_are_skipped_with_a_warning(tmp_path, size):
    Image.new("RGB", (300, 260), (120, 30, 200)).save(tmp_path / "a_good.png")
    thin = tmp_path / "b_thin.png"
    Image.new("L", size, 7).save(thin)
    assert thin.stat().st_size < 2000  # a few hundred bytes that would take gigabytes once resized
    before = _peak_rss_mb()
    folder = ImageFolder(tmp_path, Preprocess(input_size=224))
    with pytest.warns(CalibrationWarning, match=rf"b_thin.png \({size[0]}x{size[1]} is more than {MAX_ASPECT}:1"):
        crops = folder.crops()
    assert len(crops) == 1 and crops[0].shape == (224, 224, 3)
    assert _peak_rss_mb() - before < 200


def test_dimension_bounds():
    assert check_dimensions(8192, 6144) is None  # a 50 MP camera photo
    assert check_dimensions(4000, 400) is None  # a 10:1 panorama
    assert "megapixels" in check_dimensions(20000, 20000)
    assert "50:1" in check_dimensions(20000, 1)
    with pytest.raises(CalibrationError, match="more than 50:1"):
        Preprocess()(np.zeros((1, 5000, 3), np.uint8))
