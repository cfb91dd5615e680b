"""A renderer of seeded synthetic person re-ID data in Market-1501's layout.

The project cannot download real re-ID data, so the demo and the tests run on
crops drawn here: rendered "people" seen by several cameras, written as
``bounding_box_train/``, ``query/`` and ``bounding_box_test/`` JPEGs named like
Market-1501 (``PPPP_cCsS_FFFFFF_BB.jpg``).

What makes an identity (fixed across all its images): clothing colours of the
upper and lower body, drawn from a small palette so that many identities share
them; an upper-body pattern (stripes, checks, a logo on the chest or back, a
two-tone cut); sleeve and lower-garment types; accessories (shoulder bag, hat,
backpack); hair and skin; body shape (height, width, proportions, gait).

What varies and hides it: every camera has its own colour cast, brightness,
contrast, background, scale, position, blur, noise and JPEG quality, and sees
people mostly from some directions (front, back, side) -- the chest logo, the
backpack and the hair look different from each side. Every image jitters pose,
scale, position and lighting, and may be occluded by a box, a pole or a
passer-by.

Everything is a plain function of a seed: each identity, camera and image
draws from its own ``numpy`` generator keyed by (seed, kind, index), so the
bytes written do not depend on the order of work. Rendering evaluates the body
parts as implicit shapes (segments, ellipses, trapezoids in body coordinates)
on the pixel grid, vectorised with numpy (its speed: ``docs/benchmarks.md``).

Modules: :mod:`.identities` draws identities and cameras, :mod:`.render`
draws one crop, :mod:`.tree` writes the Market-1501 folder tree (names from
:mod:`mmcc.datasets.naming`, which the data set classes read with).

Its difficulty (untrained features are weak; Cluster Contrast training
raises a MobileNetV2's mAP steadily) is measured by
``tools/analysis_tools/synthetic_baselines.py``: ``docs/benchmarks.md``.
"""
from .identities import sample_camera, sample_identity
from .render import render_image
from .tree import (GENERATOR_VERSION, META_FILE, SPLIT_DIRS,
                   generate_synthetic_reid)

__all__ = [
    'GENERATOR_VERSION', 'META_FILE', 'SPLIT_DIRS', 'generate_synthetic_reid',
    'render_image', 'sample_camera', 'sample_identity'
]
