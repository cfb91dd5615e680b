"""Identities and cameras of the synthetic re-ID data: what they look like.

Every function here draws from the generator it is given, in a fixed order:
the images written for a seed depend on that order (see
``GENERATOR_VERSION`` in :mod:`.tree`).
"""
from typing import Sequence

import numpy as np

# Clothing palette, RGB in [0, 1]; neutral and dark colours are drawn more
# often, as in real clothing, so colours alone rarely single anyone out.
PALETTE = np.array(
    [
        (24, 24, 28),  # black
        (72, 72, 78),  # charcoal
        (138, 138, 140),  # grey
        (228, 226, 218),  # white
        (30, 40, 92),  # navy
        (52, 92, 170),  # blue
        (140, 178, 218),  # light blue
        (178, 32, 36),  # red
        (108, 30, 42),  # maroon
        (42, 108, 52),  # green
        (112, 110, 52),  # olive
        (196, 176, 132),  # beige
        (112, 72, 42),  # brown
        (220, 188, 44),  # yellow
        (224, 140, 168),  # pink
        (98, 52, 128),  # purple
        (224, 120, 42),  # orange
        (32, 118, 118),  # teal
    ],
    dtype=np.float64) / 255.
PALETTE_WEIGHTS = np.array(
    [14, 9, 9, 9, 9, 7, 5, 5, 4, 4, 4, 6, 5, 3, 3, 3, 3, 3], dtype=np.float64)
PALETTE_WEIGHTS /= PALETTE_WEIGHTS.sum()
SKIN_TONES = np.array([(236, 192, 160), (214, 160, 120), (176, 122, 84),
                       (120, 80, 56), (84, 56, 40)],
                      dtype=np.float64) / 255.
HAIR_COLOURS = np.array([(20, 16, 14), (60, 40, 26), (110, 76, 44),
                         (190, 160, 100), (150, 150, 150)],
                        dtype=np.float64) / 255.

UPPER_PATTERNS = ('plain', 'hstripes', 'vstripes', 'checks', 'logo', 'twotone')
UPPER_PATTERN_WEIGHTS = (0.2, 0.18, 0.12, 0.14, 0.2, 0.16)
LOGO_SHAPES = ('disc', 'square', 'diamond', 'bar', 'ring')
VIEWS = ('front', 'back', 'left', 'right')
BACKGROUND_TEXTURES = ('noise', 'tiles', 'stripes', 'bricks', 'gradient')
# Strength of the nuisances (tuned so that untrained features stay weak
# while identities remain learnable; see tools/analysis_tools/
# synthetic_baselines.py).
CAMERA_TINT = 0.06  # s.d. of the log colour gains of a camera
BACKGROUND_TINT = 0.15  # s.d. of the log tint of background colours


def _colour(rng: np.random.Generator, exclude: Sequence[int] = ()) -> int:
    weights = PALETTE_WEIGHTS.copy()
    weights[list(exclude)] = 0
    return int(rng.choice(len(PALETTE), p=weights / weights.sum()))


def sample_identity(rng: np.random.Generator) -> dict:
    """Draw the appearance of one person (everything fixed across images).

    Lengths are fractions of the person's height; colours are palette indices
    (or RGB triples for skin/hair).
    """
    upper = _colour(rng)
    lower = _colour(rng)
    pattern = UPPER_PATTERNS[rng.choice(
        len(UPPER_PATTERNS), p=UPPER_PATTERN_WEIGHTS)]
    ident = dict(
        height=rng.uniform(0.84, 1.0),
        width=rng.uniform(0.85, 1.25),
        head_r=rng.uniform(0.056, 0.07),
        torso_len=rng.uniform(0.27, 0.36),
        shoulder=rng.uniform(0.14, 0.18),
        hip=rng.uniform(0.115, 0.15),
        limb=rng.uniform(0.048, 0.062),
        stride=rng.uniform(0.04, 0.12),
        skin=SKIN_TONES[rng.integers(len(SKIN_TONES))] *
        rng.uniform(0.92, 1.06),
        hair=HAIR_COLOURS[rng.integers(len(HAIR_COLOURS))],
        hair_style=('short', 'long', 'bald')[rng.choice(3, p=(.6, .3, .1))],
        upper=upper,
        upper2=_colour(rng, exclude=(upper, )),
        pattern=pattern,
        pattern_freq=int(rng.integers(3, 7)),
        pattern_phase=rng.uniform(0, 1),
        pattern_split=rng.uniform(0.35, 0.65),
        logo_shape=LOGO_SHAPES[rng.integers(len(LOGO_SHAPES))],
        logo_side=('front', 'back', 'both')[rng.choice(3, p=(.5, .25, .25))],
        logo_x=float(rng.choice([0., 0.4, -0.4])),
        logo_size=rng.uniform(0.22, 0.4),
        long_sleeves=bool(rng.random() < 0.55),
        lower=lower,
        lower_style=('trousers', 'shorts',
                     'skirt')[rng.choice(3, p=(.66, .17, .17))],
        side_stripe=bool(rng.random() < 0.15),
        lower2=_colour(rng, exclude=(lower, )),
        shoes=_colour(rng),
        hat=_colour(rng) if rng.random() < 0.2 else None,
        backpack=_colour(rng) if rng.random() < 0.25 else None,
        bag=_colour(rng) if rng.random() < 0.25 else None,
        bag_side=float(rng.choice([-1., 1.])),
        # Small per-person shade of the palette colours.
        shade=rng.normal(1.0, 0.05, size=3),
    )
    return ident


def sample_camera(rng: np.random.Generator) -> dict:
    """Draw one camera: colour cast, exposure, background, framing, optics."""
    # Muted background colours: a grey level with a light tint.
    wall = rng.uniform(0.25, 0.75) * np.exp(
        rng.normal(0, BACKGROUND_TINT, size=3))
    floor = rng.uniform(0.2, 0.65) * np.exp(
        rng.normal(0, BACKGROUND_TINT, size=3))
    views = rng.dirichlet((0.7, 0.7, 0.4, 0.4))
    return dict(
        gain=np.exp(rng.normal(0, CAMERA_TINT, size=3)),
        exposure=rng.uniform(0.85, 1.15),
        gamma=rng.uniform(0.9, 1.15),
        saturation=rng.uniform(0.7, 1.1),
        contrast=rng.uniform(0.8, 1.1),
        light_slope=rng.uniform(-0.25, 0.25),
        wall=np.clip(wall, 0.03, 0.97),
        floor=np.clip(floor, 0.03, 0.97),
        horizon=rng.uniform(0.5, 0.8),
        texture=BACKGROUND_TEXTURES[rng.integers(len(BACKGROUND_TEXTURES))],
        texture_period=rng.uniform(3, 12),
        texture_contrast=rng.uniform(0.03, 0.1),
        scale=rng.uniform(0.85, 0.96),
        y_shift=rng.uniform(-0.04, 0.04),
        views=views,
        blur=rng.uniform(0.0, 0.9),
        noise=rng.uniform(0.008, 0.03),
        jpeg_quality=int(rng.integers(70, 93)),
    )
