"""NormalizedRandomErasing: the reference's erasing, after normalisation."""
import numpy as np
import pytest
import torch
from mmpretrain.structures import DataSample

from mmcc.datasets.transforms import NormalizedRandomErasing
from mmcc.registry import MODELS
from mmcc.utils import register_all_modules

FILL = (0.4914, 0.4822, 0.4465)  # RGB, normalised units


def _preprocessor():
    register_all_modules(init_default_scope=False)
    model = MODELS.build(
        dict(
            type='ReIDModel',
            backbone=dict(type='mmpretrain.ResNet', depth=18),
            neck=dict(type='BNNeck', in_channels=512)))
    return model.data_preprocessor


def test_erased_pixels_normalise_to_the_reference_fill():
    """Through the model's data preprocessor (BGR -> RGB, ImageNet
    mean/std) the erased rectangle holds exactly the reference's values."""
    np.random.seed(0)
    transform = NormalizedRandomErasing(prob=1.0)
    img = np.random.randint(0, 256, (128, 64, 3), dtype=np.uint8)
    out = transform(dict(img=img.copy()))['img']
    assert out.dtype == np.float32
    erased = np.any(out != img, axis=2)
    rows, cols = np.flatnonzero(erased.any(1)), np.flatnonzero(erased.any(0))
    assert len(rows) and len(cols)
    top, left, h, w = rows[0], cols[0], len(rows), len(cols)
    assert erased[top:top + h, left:left + w].all()  # one rectangle
    assert 0.02 * 128 * 64 * 0.8 <= h * w <= 0.4 * 128 * 64 * 1.2
    inputs = torch.from_numpy(out).permute(2, 0, 1)
    data = _preprocessor()(dict(inputs=[inputs], data_samples=[DataSample()]),
                           False)
    patch = data['inputs'][0][:, top:top + h, left:left + w]
    for channel, value in enumerate(FILL):
        torch.testing.assert_close(
            patch[channel], torch.full((h, w), value), atol=1e-5, rtol=0)
    # outside the rectangle the image is untouched
    assert np.array_equal(out[~erased], img[~erased].astype(np.float32))


def test_boxes_follow_the_reference_distribution():
    np.random.seed(1)
    transform = NormalizedRandomErasing()
    boxes = [transform.erase_box(256, 128) for _ in range(2000)]
    erased = [b for b in boxes if b is not None]
    # probability 0.5 (binomial sd ~0.011 over 2000 draws)
    assert 0.45 < len(erased) / len(boxes) < 0.55
    areas = np.array([h * w for _, _, h, w in erased]) / (256 * 128)
    aspects = np.array([h / w for _, _, h, w in erased])
    assert areas.min() > 0.015 and areas.max() < 0.42
    # aspect r = h / w in [0.3, 1 / 0.3], uniform in r (not in log r):
    # its median is near the middle of the interval, well above 1
    assert aspects.min() > 0.25 and aspects.max() < 1 / 0.25
    assert np.median(aspects) > 1.2
    for top, left, h, w in erased:
        assert 0 <= top and top + h <= 256 and 0 <= left and left + w <= 128


def test_no_erasing_keeps_the_image_and_bad_arguments_are_refused():
    img = np.random.randint(0, 256, (8, 4, 3), dtype=np.uint8)
    out = NormalizedRandomErasing(prob=0.0)(dict(img=img))['img']
    assert out.dtype == np.float32 and np.array_equal(out, img)
    for kwargs in (dict(prob=1.5), dict(area_ratio=(0.5, 0.2)),
                   dict(min_aspect=0.0), dict(fill=(0.1, 0.2))):
        with pytest.raises(ValueError):
            NormalizedRandomErasing(**kwargs)
