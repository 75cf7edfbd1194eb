import warnings

import numpy as np
import pytest
from PIL import Image

from lightexport.calib import Preprocess, UnreadableImageError, load_image, sample_photos
from lightexport.errors import UsageError
from lightexport.model_defs import get_spec

PLAIN = dict(mean=(0.5, 0.25, 0.125), std=(0.5, 0.25, 0.2))


def test_crop_and_normalization_by_hand():
    # 20x10 image whose red channel is the column, green the row, blue constant
    rows, cols = np.mgrid[0:10, 0:20]
    image = np.stack([cols * 10, rows * 20, np.full_like(cols, 51)], axis=-1).astype(np.uint8)
    pre = Preprocess(input_size=8, crop_pct=0.8, **PLAIN)  # shorter side round(8 / 0.8) = 10: no resize
    out = pre(image)
    assert out.shape == (1, 3, 8, 8) and out.dtype == np.float32 and out.flags.c_contiguous
    # crop offsets: left round((20 - 8) / 2) = 6, top round((10 - 8) / 2) = 1
    red = (np.arange(6, 14) * 10 / 255 - 0.5) / 0.5
    green = (np.arange(1, 9) * 20 / 255 - 0.25) / 0.25
    np.testing.assert_allclose(out[0, 0], np.broadcast_to(red, (8, 8)), atol=1e-6)
    np.testing.assert_allclose(out[0, 1], np.broadcast_to(green[:, None], (8, 8)), atol=1e-6)
    np.testing.assert_allclose(out[0, 2], (51 / 255 - 0.125) / 0.2, atol=1e-6)


@pytest.mark.parametrize("interpolation", ["bilinear", "bicubic"])
def test_resize_shorter_side_then_center_crop(interpolation):
    image = Image.new("RGB", (40, 30), (200, 100, 50))
    pre = Preprocess(input_size=16, crop_pct=0.5, interpolation=interpolation)
    crop = pre.crop(image)  # shorter side 30 -> 32, longer int(32 * 40 / 30) = 42
    assert crop.shape == (16, 16, 3) and crop.dtype == np.uint8
    assert (crop == [200, 100, 50]).all()
    portrait = pre.crop(Image.new("RGB", (30, 40)))
    assert portrait.shape == (16, 16, 3)


def test_resize_size_floors_like_timm():
    assert Preprocess(224, crop_pct=0.875).resize_size == 256
    assert Preprocess(224, crop_pct=0.9).resize_size == 248  # 248.9: timm's math.floor
    assert Preprocess(160, crop_pct=0.875).resize_size == 182  # 182.86


def test_matches_torchvision_eval_transform():
    transforms = pytest.importorskip("torchvision.transforms")
    photo = Image.fromarray(sample_photos()[1])  # chelsea, 451x300
    pre = Preprocess(input_size=96, crop_pct=0.9)
    reference = transforms.Compose([
        transforms.Resize(pre.resize_size, interpolation=transforms.InterpolationMode.BICUBIC),
        transforms.CenterCrop(96),
        transforms.ToTensor(),
        transforms.Normalize(pre.mean, pre.std),
    ])(photo)  # fmt: skip
    np.testing.assert_allclose(pre(photo)[0], reference.numpy(), atol=1e-6)


def test_from_spec_uses_the_registry_entry():
    spec = get_spec("fasternet_t0")
    pre = Preprocess.from_spec(spec)
    assert (pre.input_size, pre.mean, pre.std, pre.crop_pct) == (224, spec.mean, spec.std, spec.crop_pct)
    assert Preprocess.from_spec(spec, input_size=160).shape == (1, 3, 160, 160)
    assert pre.interpolation == "bicubic"  # timm and the official FasterNet evaluation


def test_torchvision_models_preprocess_like_torchvision_weights_transforms():
    """mobilenet_v2's weights declare their eval transform: resize 256 bilinear, crop 224, ImageNet mean/std."""
    models = pytest.importorskip("torchvision.models")
    photo = Image.fromarray(sample_photos()[1])
    pre = Preprocess.from_spec(get_spec("mobilenet_v2"))
    reference = models.MobileNet_V2_Weights.IMAGENET1K_V1.transforms()(photo)
    np.testing.assert_allclose(pre(photo)[0], reference.numpy(), atol=1e-5)


@pytest.mark.parametrize("kwargs", [dict(interpolation="nearest"), dict(crop_pct=0.0), dict(crop_pct=1.5),
                                    dict(input_size=0)])
def test_invalid_settings(kwargs):
    with pytest.raises(UsageError):
        Preprocess(**kwargs)


def _palette_image(transparent: bool) -> Image.Image:
    image = Image.new("P", (4, 4), 1)
    image.putpalette([0, 0, 0, 10, 20, 30] + [0] * 762)
    if transparent:
        image.info["transparency"] = 0
    return image


@pytest.mark.parametrize(
    "make, suffix, rgb",
    [
        (lambda: Image.new("L", (4, 4), 77), ".png", (77, 77, 77)),
        (lambda: Image.new("LA", (4, 4), (77, 0)), ".png", (77, 77, 77)),
        (lambda: Image.new("RGBA", (4, 4), (10, 20, 30, 0)), ".png", (10, 20, 30)),  # alpha dropped, not composited
        (lambda: _palette_image(False), ".png", (10, 20, 30)),
        (lambda: _palette_image(True), ".png", (10, 20, 30)),
        (lambda: Image.new("1", (4, 4), 1), ".bmp", (255, 255, 255)),
        (lambda: Image.new("I;16", (4, 4), 65535), ".png", (255, 255, 255)),  # rescaled, not clipped
        (lambda: Image.new("CMYK", (4, 4), (0, 255, 255, 0)), ".jpg", (255, 0, 0)),
    ],
    ids=["L", "LA", "RGBA", "P", "P-transparent", "1", "I;16", "CMYK"],
)
def test_any_mode_becomes_rgb(tmp_path, make, suffix, rgb):
    path = tmp_path / f"image{suffix}"
    make().save(path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # e.g. PIL's warning about palette transparency
        image = load_image(path)
    assert image.mode == "RGB"
    pixels = np.asarray(image)
    tolerance = 2 if suffix == ".jpg" else 0
    assert np.abs(pixels.astype(int) - rgb).max() <= tolerance
    assert Preprocess(input_size=4, crop_pct=1.0)(path).shape == (1, 3, 4, 4)


def test_unreadable_image_names_the_file(tmp_path):
    bad = tmp_path / "fake.png"
    bad.write_text("not an image")
    with pytest.raises(UnreadableImageError, match="cannot read image .*fake.png: not a recognizable image"):
        load_image(bad)
