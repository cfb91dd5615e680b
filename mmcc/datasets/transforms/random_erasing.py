"""Random erasing as the Cluster Contrast reference applies it."""
import math
from typing import Sequence

import numpy as np
from mmcv.transforms import BaseTransform

from mmcc.registry import TRANSFORMS

# ImageNet statistics in RGB order, 0-255 pixel units: what the model's data
# preprocessor normalises with.
IMAGENET_MEAN = (123.675, 116.28, 103.53)
IMAGENET_STD = (58.395, 57.12, 57.375)


@TRANSFORMS.register_module()
class NormalizedRandomErasing(BaseTransform):
    """Erase a random rectangle with a colour given in *normalised* units.

    The reference erases after ``Normalize``, filling with the values
    ``fill`` (0.4914, 0.4822, 0.4465 in its scripts) in normalised space. In
    an OpenMMLab pipeline normalisation happens later, in the model's data
    preprocessor, so this transform fills with the raw value that
    normalises to ``fill`` exactly, ``mean + std * fill``, and returns a
    float32 image (a uint8 image could not hold that value).
    mmpretrain's ``RandomErasing`` differs in three ways that change the
    distribution: it rounds the fill to uint8, samples the aspect ratio
    log-uniformly and makes one attempt; this one follows the reference:

    - with probability ``1 - prob`` the image is returned as is (but float);
    - up to ``max_attempts`` times: area ``a ~ U(area_ratio) * H * W``,
      aspect ``r ~ U(min_aspect, 1 / min_aspect)``,
      ``h = round(sqrt(a r))``, ``w = round(sqrt(a / r))``; the first
      ``h < H, w < W`` is placed uniformly (top in ``[0, H - h]``, left in
      ``[0, W - w]``) and filled.

    Required keys: ``img`` (H, W, 3), BGR as ``LoadImageFromFile`` reads it
    (or RGB with ``bgr=False``). Modified keys: ``img`` (float32).

    Args:
        prob (float): Probability of erasing. Defaults to 0.5.
        area_ratio (tuple[float, float]): Range of the erased area's share
            of the image. Defaults to (0.02, 0.4).
        min_aspect (float): Aspect ratios lie in
            ``[min_aspect, 1 / min_aspect]``. Defaults to 0.3.
        fill (sequence[float]): RGB fill in normalised units. Defaults to
            (0.4914, 0.4822, 0.4465).
        mean (sequence[float]): RGB mean of the normalisation, 0-255.
        std (sequence[float]): RGB std of the normalisation, 0-255.
        bgr (bool): The image's channels are in BGR order. Defaults to
            True.
        max_attempts (int): Defaults to 100.
    """

    def __init__(self,
                 prob: float = 0.5,
                 area_ratio: Sequence[float] = (0.02, 0.4),
                 min_aspect: float = 0.3,
                 fill: Sequence[float] = (0.4914, 0.4822, 0.4465),
                 mean: Sequence[float] = IMAGENET_MEAN,
                 std: Sequence[float] = IMAGENET_STD,
                 bgr: bool = True,
                 max_attempts: int = 100) -> None:
        if not 0.0 <= prob <= 1.0:
            raise ValueError(f'prob must be in [0, 1], got {prob}')
        low, high = area_ratio
        if not 0.0 < low <= high <= 1.0:
            raise ValueError(f'area_ratio must satisfy 0 < low <= high <= 1, '
                             f'got {area_ratio}')
        if not 0.0 < min_aspect <= 1.0:
            raise ValueError(f'min_aspect must be in (0, 1], got {min_aspect}')
        if not len(fill) == len(mean) == len(std) == 3:
            raise ValueError('fill, mean and std need one value per channel')
        self.prob = prob
        self.area_ratio = (float(low), float(high))
        self.min_aspect = float(min_aspect)
        raw = np.asarray(mean, np.float64) + np.asarray(std, np.float64) * \
            np.asarray(fill, np.float64)
        self.fill_raw = (raw[::-1] if bgr else raw).astype(np.float32)
        self.max_attempts = max_attempts

    def erase_box(self, img_h: int, img_w: int):
        """(top, left, h, w) of the rectangle to erase, or None."""
        if np.random.rand() >= self.prob:
            return None
        for _ in range(self.max_attempts):
            area = np.random.uniform(*self.area_ratio) * img_h * img_w
            aspect = np.random.uniform(self.min_aspect, 1 / self.min_aspect)
            h = int(round(math.sqrt(area * aspect)))
            w = int(round(math.sqrt(area / aspect)))
            if h < img_h and w < img_w:
                top = np.random.randint(0, img_h - h + 1)
                left = np.random.randint(0, img_w - w + 1)
                return top, left, h, w
        return None

    def transform(self, results: dict) -> dict:
        img = results['img'].astype(np.float32)
        box = self.erase_box(*img.shape[:2])
        if box is not None:
            top, left, h, w = box
            img[top:top + h, left:left + w] = self.fill_raw
        results['img'] = img
        return results

    def __repr__(self) -> str:
        return (f'{type(self).__name__}(prob={self.prob}, area_ratio='
                f'{self.area_ratio}, min_aspect={self.min_aspect}, '
                f'fill_raw={self.fill_raw.tolist()})')
