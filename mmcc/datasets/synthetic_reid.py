"""A seeded synthetic person re-ID data set in Market-1501's layout.

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
on the pixel grid, vectorised with numpy: about 3 ms per crop.

Difficulty, measured by ``tools/analysis_tools/synthetic_baselines.py`` on the
default tree: untrained features are weak (colour histograms a few % mAP,
ImageNet MobileNetV2 under 20 %), while a few hundred Cluster Contrast
iterations on CPU raise a MobileNetV2's mAP steadily.
"""
import json
import os
import os.path as osp
import re
import shutil
import tempfile
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
from PIL import Image, ImageFilter

# Bump when the images drawn for given parameters change: a cached tree with
# another version is regenerated.
GENERATOR_VERSION = 2

SPLIT_DIRS = ('bounding_box_train', 'query', 'bounding_box_test')
META_FILE = 'meta.json'
# Market-1501 file names: identity (4 digits, or -1 for junk), camera,
# sequence, frame, box.
MARKET_NAME = re.compile(r'^(-1|\d{4})_c(\d)s(\d)_(\d{6})_(\d{2})\.jpg$')

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

# Stream keys: every identity / camera / image has its own generator.
_IDENTITY, _CAMERA, _IMAGE, _SPLIT = 1, 2, 3, 4
_PASSER, _DISTRACTOR, _DISTRACTOR_ID, _JUNK = 5, 6, 7, 8
# Strength of the nuisances (tuned so that untrained features stay weak
# while identities remain learnable; see tools/analysis_tools/
# synthetic_baselines.py).
PASSER_BY_RATE = 0.08  # images with a passer-by next to the person
OCCLUSION_RATE = 0.15  # images with an occluding box or pole
CAMERA_TINT = 0.06  # s.d. of the log colour gains of a camera
BACKGROUND_TINT = 0.15  # s.d. of the log tint of background colours
BACKGROUND_JITTER = 0.15  # s.d. of its per-image log change
BACKGROUND_SWITCH = 0.3  # images showing another texture than the camera's


def _rng(seed: int, *keys: int) -> np.random.Generator:
    return np.random.default_rng([int(seed), *[int(k) for k in keys]])


def _colour(rng: np.random.Generator, exclude: Sequence[int] = ()) -> int:
    weights = PALETTE_WEIGHTS.copy()
    weights[list(exclude)] = 0
    return int(rng.choice(len(PALETTE), p=weights / weights.sum()))


# ---------------------------------------------------------------------------
# Identities and cameras
# ---------------------------------------------------------------------------
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


# ---------------------------------------------------------------------------
# Rendering
# ---------------------------------------------------------------------------
def _segment_distance(u: np.ndarray, v: np.ndarray, a: Tuple[float, float],
                      b: Tuple[float, float]) -> Tuple[np.ndarray, np.ndarray]:
    """Distance of points (u, v) to segment a-b, and the position t in [0, 1]
    of the closest point along it."""
    du, dv = b[0] - a[0], b[1] - a[1]
    t = ((u - a[0]) * du + (v - a[1]) * dv) / max(du * du + dv * dv, 1e-12)
    t = np.clip(t, 0., 1.)
    return np.hypot(u - a[0] - t * du, v - a[1] - t * dv), t


def _paint(canvas: np.ndarray,
           mask: np.ndarray,
           colour,
           shade: Optional[np.ndarray] = None) -> None:
    """Paint ``colour`` (RGB or (H, W, 3)) where ``mask``; ``shade`` darkens
    towards the edges of a rounded part."""
    colour = np.asarray(colour, dtype=canvas.dtype)
    col = colour[mask] if colour.ndim == 3 else colour
    if shade is not None:
        col = col * shade[mask][:, None]
    canvas[mask] = col


def _logo_mask(shape: str, du: np.ndarray, dv: np.ndarray) -> np.ndarray:
    """A logo centred at (0, 0) of radius 1 in local units."""
    if shape == 'disc':
        return du * du + dv * dv < 1
    if shape == 'square':
        return (np.abs(du) < 0.85) & (np.abs(dv) < 0.85)
    if shape == 'diamond':
        return np.abs(du) + np.abs(dv) < 1
    if shape == 'bar':
        return (np.abs(du) < 1.2) & (np.abs(dv) < 0.4)
    r2 = du * du + dv * dv  # ring
    return (r2 < 1) & (r2 > 0.3)


def _draw_person(canvas: np.ndarray, xx: np.ndarray, yy: np.ndarray,
                 ident: dict, pose: dict) -> np.ndarray:
    """Draw one person on ``canvas`` (H, W, 3) in place; return its mask.

    ``pose``: ``cx``, ``foot_y``, ``height`` (pixels), ``view``, ``phase``
    (walking phase in [-1, 1]), ``arm`` (arm swing), ``lean``.
    """
    hp = pose['height'] * ident['height']
    top = pose['foot_y'] - hp
    v = (yy - top) / hp
    u = (xx - pose['cx']) / hp + pose['lean'] * (1. - v)
    view, phase = pose['view'], pose['phase']
    side = view in ('left', 'right')
    facing = {'left': -1., 'right': 1.}.get(view, 0.)
    wf = ident['width']
    shade_id = ident['shade']
    pal = PALETTE * 1.0

    def cloth(idx):
        return np.clip(pal[idx] * shade_id, 0, 1)

    upper, upper2 = cloth(ident['upper']), cloth(ident['upper2'])
    lower, lower2 = cloth(ident['lower']), cloth(ident['lower2'])
    skin, hair = ident['skin'], ident['hair']
    head_r = ident['head_r']
    head_v = head_r * 1.05
    sh_v = head_v + head_r + 0.025
    hip_v = sh_v + ident['torso_len']
    foot_v = 0.985
    sw = ident['shoulder'] * wf * (0.68 if side else 1.)
    hw = ident['hip'] * wf * (0.75 if side else 1.)
    limb = ident['limb'] * (0.9 + 0.2 * (wf - 0.8))
    person = np.zeros(canvas.shape[:2], dtype=bool)

    # Backpack behind the body in side view / straps in front view come
    # later; in back view it covers the torso.
    if ident['backpack'] is not None and side:
        bp = cloth(ident['backpack'])
        bu = -facing * (sw + 0.05)
        m = (np.abs(u - bu) < 0.06) & (v > sh_v + 0.01) & (v < hip_v - 0.04)
        _paint(canvas, m, bp)
        person |= m

    # Legs: hip points and feet, walking stride in side view.
    stride = ident['stride'] * phase
    if side:
        hips = [(0.01, hip_v), (-0.01, hip_v)]
        feet = [(stride, foot_v - 0.03), (-stride, foot_v - 0.03)]
    else:
        spread = hw * 0.5 + 0.03 * abs(phase)
        hips = [(-hw * 0.5, hip_v), (hw * 0.5, hip_v)]
        feet = [(-spread, foot_v - 0.03), (spread, foot_v - 0.03)]
    legs = np.zeros_like(person)
    for hip_pt, foot_pt in zip(hips, feet):
        d, t = _segment_distance(u, v, hip_pt, foot_pt)
        m = d < limb * 1.2
        shade = 1. - 0.35 * np.clip(d / (limb * 1.2), 0, 1)**2
        if ident['lower_style'] == 'shorts':
            bare = m & (t > 0.4)
            _paint(canvas, bare, skin, shade)
            _paint(canvas, m & ~bare, lower, shade)
        else:
            _paint(canvas, m, lower, shade)
            if ident['side_stripe']:
                _paint(canvas, m & (d > limb * 0.75), lower2)
        # Shoe.
        sm = ((u - foot_pt[0] - 0.015 * facing)**2 / (limb * 1.5)**2 +
              (v - foot_v + 0.012)**2 / 0.022**2) < 1
        _paint(canvas, sm, cloth(ident['shoes']))
        legs |= m | sm
    person |= legs
    if ident['lower_style'] == 'skirt':
        t = np.clip((v - hip_v) / 0.2, 0, 1)
        m = (v >= hip_v - 0.01) & (v < hip_v + 0.2) & (
            np.abs(u) < hw + 0.05 * t)
        _paint(canvas, m, lower, 1. - 0.3 * (u / (hw + 0.05))**2)
        person |= m

    # Torso with the upper-body pattern in torso coordinates.
    tv = (v - sh_v) / (hip_v - sh_v)
    half = sw + (hw - sw) * np.clip(tv, 0, 1)
    tu = u / np.maximum(half, 1e-6)
    torso = (tv >= 0) & (tv <= 1.02) & (np.abs(tu) < 1)
    colour = np.broadcast_to(upper, canvas.shape).copy()
    pat = ident['pattern']
    f, ph = ident['pattern_freq'], ident['pattern_phase']
    second = None
    if pat == 'hstripes':
        second = np.floor(tv * f + ph) % 2 == 1
    elif pat == 'vstripes':
        second = np.floor((tu + 1) * f * 0.5 + ph) % 2 == 1
    elif pat == 'checks':
        second = (np.floor(tv * f + ph) + np.floor((tu + 1) * f * 0.5)) % 2
        second = second == 1
    elif pat == 'twotone':
        second = tv > ident['pattern_split']
    elif pat == 'logo':
        visible = (
            ident['logo_side'] == 'both'
            or (view == 'front' and ident['logo_side'] == 'front')
            or (view == 'back' and ident['logo_side'] == 'back'))
        if visible:
            lx = ident['logo_x'] * (1. if view == 'front' else -1.)
            if ident['logo_side'] == 'back' or view == 'back':
                lx = 0.
            second = _logo_mask(ident['logo_shape'],
                                (tu - lx) / ident['logo_size'],
                                (tv - 0.35) / (ident['logo_size'] * 0.5))
        elif side and ident['logo_side'] != 'back':
            # Seen from the side: a sliver of the logo at the chest edge.
            second = _logo_mask(ident['logo_shape'],
                                (tu - 0.8 * facing) / 0.25,
                                (tv - 0.35) / (ident['logo_size'] * 0.5))
    if second is not None:
        colour[second] = upper2
    _paint(canvas, torso, colour, 1. - 0.3 * np.clip(tu, -1, 1)**2)
    person |= torso
    # Back view: a backpack over the torso; front view: its straps.
    if ident['backpack'] is not None and not side:
        bp = cloth(ident['backpack'])
        if view == 'back':
            m = (np.abs(tu) < 0.72) & (tv > 0.08) & (tv < 0.85)
            _paint(canvas, m, bp, 1. - 0.25 * tu**2)
        else:
            m = torso & (np.abs(np.abs(tu) - 0.6) < 0.1) & (tv < 0.7)
            _paint(canvas, m, bp * 0.8)

    # Arms: one in side view (swinging), two otherwise.
    hand_v = hip_v + 0.07
    if side:
        arm_pts = [((0.0, sh_v + 0.02), (pose['arm'] * 0.12, hand_v))]
    else:
        arm_pts = [((s * sw * 0.92, sh_v + 0.02),
                    (s * (sw * 1.05 + 0.02 + 0.015 * pose['arm']), hand_v))
                   for s in (-1., 1.)]
    for a, b in arm_pts:
        d, t = _segment_distance(u, v, a, b)
        m = d < limb
        shade = 1. - 0.35 * np.clip(d / limb, 0, 1)**2
        sleeve = t < (0.92 if ident['long_sleeves'] else 0.4)
        _paint(canvas, m & sleeve, upper, shade)
        _paint(canvas, m & ~sleeve, skin, shade)
        person |= m

    # Head, hair, hat.
    hu = u - 0.012 * facing
    r2 = (hu / (head_r * 0.82))**2 + ((v - head_v) / head_r)**2
    head = r2 < 1
    _paint(canvas, head, skin, 1. - 0.3 * np.clip(r2, 0, 1))
    neck = (np.abs(u) < head_r * 0.4) & (v > head_v) & (v < sh_v + 0.01)
    _paint(canvas, neck & ~head, skin * 0.9)
    if ident['hair_style'] != 'bald':
        if view == 'back':
            hm = head.copy()
        elif side:
            hm = head & ((v < head_v - 0.25 * head_r) |
                         (hu * facing < -0.2 * head_r))
        else:
            hm = head & (v < head_v - 0.35 * head_r)
        if ident['hair_style'] == 'long':
            long = ((np.abs(hu + 0.3 * facing * head_r) < head_r * 0.95) &
                    (v > head_v) & (v < sh_v + 0.09))
            if view == 'front':
                long &= np.abs(hu) > head_r * 0.55
            hm |= long
        _paint(canvas, hm, hair)
        person |= hm
    person |= head | neck
    if ident['hat'] is not None:
        hat = cloth(ident['hat'])
        crown = head & (v < head_v - 0.3 * head_r)
        brim = ((np.abs(hu + 0.35 * facing * head_r) < head_r * 1.15) &
                (np.abs(v - (head_v - 0.3 * head_r)) < 0.008))
        _paint(canvas, crown | brim, hat)
        person |= brim

    # Shoulder bag on one side, strap across the torso.
    if ident['bag'] is not None:
        bag = cloth(ident['bag'])
        s = ident['bag_side'] * (1. if view != 'back' else -1.)
        if side:
            s = 0.3 * s
        bu = s * (sw + 0.035)
        m = (np.abs(u - bu) < 0.055) & (v > hip_v - 0.06) & (v < hip_v + 0.06)
        d, _ = _segment_distance(u, v, (-s * sw * 0.8, sh_v),
                                 (bu, hip_v - 0.06))
        strap = (d < 0.008) & (torso | m)
        _paint(canvas, strap, bag * 0.7)
        _paint(canvas, m, bag, 1. - 0.2 * ((u - bu) / 0.055)**2)
        person |= m
    return person


_GRIDS: Dict[Tuple[int, int], Tuple[np.ndarray, np.ndarray]] = {}


def _grid(h: int, w: int) -> Tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates (y, x), each (h, w) float32, cached."""
    if (h, w) not in _GRIDS:
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32) + np.float32(0.5)
        yy.flags.writeable = xx.flags.writeable = False
        _GRIDS[h, w] = (yy, xx)
    return _GRIDS[h, w]


def _background(rng: np.random.Generator, cam: dict, xx: np.ndarray,
                yy: np.ndarray, ss: int) -> np.ndarray:
    """The camera's background with per-image variation, (H, W, 3) float32;
    ``ss`` is the supersampling factor (texture sizes are output pixels).

    The camera fixes the scene (colours, horizon, texture); every image moves
    along it (another stretch of wall, other light, other objects), and now
    and then shows another kind of surface, so that the background says
    something about the camera but does not fix it.
    """
    h, w = xx.shape
    horizon = (cam['horizon'] + rng.normal(0, 0.06)) * h
    jitter = BACKGROUND_JITTER
    wall = np.clip(cam['wall'] * np.exp(rng.normal(0, jitter, 3)), 0, 1)
    floor = np.clip(cam['floor'] * np.exp(rng.normal(0, jitter, 3)), 0, 1)
    img = np.where((yy < horizon)[..., None], wall, floor)
    period = cam['texture_period'] * ss * rng.uniform(0.7, 1.4)
    ox, oy = rng.uniform(0, 100, size=2) * ss
    c = cam['texture_contrast'] * rng.uniform(0.5, 1.5)
    tex = cam['texture']
    if rng.random() < BACKGROUND_SWITCH:
        tex = BACKGROUND_TEXTURES[rng.integers(len(BACKGROUND_TEXTURES))]
    if tex == 'tiles':
        t = ((np.floor((xx + ox) / period) + np.floor(
            (yy + oy) / period)) % 2) * 2 - 1
    elif tex == 'stripes':
        t = np.sin((xx + ox) / period * 2 * np.pi)
    elif tex == 'bricks':
        row = np.floor((yy + oy) / (period * 0.5))
        t = (((xx + ox + (row % 2) * period * 0.5) % period)
             < ss) | (((yy + oy) % (period * 0.5)) < ss)
        t = 1 - 2 * t.astype(np.float32)
    elif tex == 'gradient':
        t = (yy / h - 0.5) * 2 + 0.5 * np.sin((xx + ox) / (3 * period))
    else:  # noise: coarse blobs from an upsampled random grid
        cell = 4 * ss
        grid = rng.normal(0, 1, (h // cell + 1, w // cell + 1))
        t = np.kron(grid, np.ones((cell, cell)))[:h, :w]
    img = (img * (1 + c * t)[..., None]).astype(np.float32)
    # Clutter: a few background objects (doors, signs, windows, people
    # far away).
    for _ in range(rng.integers(0, 4)):
        x0, y0 = rng.uniform(-0.2, 1.0) * w, rng.uniform(0, 0.9) * h
        bw, bh = rng.uniform(0.1, 0.5) * w, rng.uniform(0.05, 0.4) * h
        m = (xx >= x0) & (xx < x0 + bw) & (yy >= y0) & (yy < y0 + bh)
        img[m] = 0.5 * img[m] + 0.5 * rng.uniform(0.05, 0.95, size=3)
    return img


def _occlude(rng: np.random.Generator, canvas: np.ndarray, xx: np.ndarray,
             yy: np.ndarray) -> None:
    """A box rising from the bottom, a box at a side, or a pole."""
    h, w = xx.shape
    kind = rng.choice(3)
    colour = rng.uniform(0.05, 0.9, size=3)
    if kind == 0:
        top = h * rng.uniform(0.65, 0.85)
        x0, x1 = sorted(rng.uniform(-0.3, 1.3, size=2) * w)
        if x1 - x0 < 0.4 * w:
            x0, x1 = -1, w + 1
        m = (yy > top) & (xx > x0) & (xx < x1)
    elif kind == 1:
        width = w * rng.uniform(0.18, 0.35)
        m = xx < width if rng.random() < 0.5 else xx > w - width
        m &= yy > h * rng.uniform(0, 0.5)
    else:
        x0 = w * rng.uniform(0.15, 0.85)
        m = np.abs(xx - x0) < w * rng.uniform(0.04, 0.1)
    shade = 1. - 0.25 * ((yy / h) - 0.5)**2
    _paint(canvas, m, colour, shade)


def render_image(ident: dict,
                 cam: dict,
                 rng: np.random.Generator,
                 size: Tuple[int, int] = (64, 128),
                 passer_by: Optional[dict] = None,
                 person_scale: float = 1.0,
                 draw_person: bool = True,
                 supersample: int = 1) -> Image.Image:
    """Render one crop of ``ident`` seen by ``cam``.

    Args:
        ident: from :func:`sample_identity`.
        cam: from :func:`sample_camera`.
        rng: the image's generator (pose, lighting, occlusion, noise).
        size: (W, H) of the output.
        passer_by: another identity, drawn partly behind or in front.
        person_scale: extra scale factor (junk crops use extreme ones).
        draw_person: False renders background and clutter only.
        supersample: draw at this multiple of ``size`` and average down
            (smoother edges, slower).

    Returns:
        PIL.Image: RGB, ``size``.
    """
    out_w, out_h = size
    ss = supersample
    w, h = out_w * ss, out_h * ss
    yy, xx = _grid(h, w)
    canvas = _background(rng, cam, xx, yy, ss)

    view = VIEWS[rng.choice(4, p=cam['views'])]
    scale = cam['scale'] * person_scale * np.exp(rng.normal(0, 0.05))
    pose = dict(
        cx=w * (0.5 + rng.normal(0, 0.06)),
        foot_y=h * (0.5 + scale / 2 + cam['y_shift'] + rng.normal(0, 0.025)),
        height=h * scale,
        view=view,
        phase=rng.uniform(-1, 1),
        arm=rng.uniform(-1, 1),
        lean=rng.normal(0, 0.02))
    passer_first = passer_by is not None and rng.random() < 0.5
    passer_pose = None
    if passer_by is not None:
        passer_pose = dict(pose)
        passer_pose.update(
            cx=w * (0.5 + rng.choice([-1, 1]) * rng.uniform(0.45, 0.7)),
            view=VIEWS[rng.integers(4)],
            phase=rng.uniform(-1, 1),
            height=pose['height'] * rng.uniform(0.9, 1.1))
    if passer_first:
        _draw_person(canvas, xx, yy, passer_by, passer_pose)
    if draw_person:
        _draw_person(canvas, xx, yy, ident, pose)
    if passer_by is not None and not passer_first:
        _draw_person(canvas, xx, yy, passer_by, passer_pose)
    if rng.random() < OCCLUSION_RATE:
        _occlude(rng, canvas, xx, yy)

    if ss > 1:
        canvas = canvas.reshape(out_h, ss, out_w, ss, 3).mean(axis=(1, 3))
    # Camera response: lighting gradient, colour cast, exposure, gamma,
    # saturation, contrast, each with a little per-image variation.
    rows = (np.arange(out_h, dtype=np.float32) / out_h - 0.5)[:, None, None]
    img = canvas * (1 + (cam['light_slope'] + rng.normal(0, 0.05)) * rows)
    img = img * cam['gain'] * np.exp(rng.normal(0, 0.04, 3))
    img = img * cam['exposure'] * np.exp(rng.normal(0, 0.08))
    img = np.clip(img, 0, 1)**(cam['gamma'] * np.exp(rng.normal(0, 0.04)))
    grey = img.mean(axis=2, keepdims=True)
    img = grey + cam['saturation'] * (img - grey)
    img = 0.5 + cam['contrast'] * (img - 0.5)
    img = np.clip(img, 0, 1)

    pil = Image.fromarray((img * 255 + 0.5).astype(np.uint8))
    radius = cam['blur'] + abs(rng.normal(0, 0.25))
    if radius > 0.15:
        pil = pil.filter(ImageFilter.GaussianBlur(radius))
    arr = np.asarray(pil, dtype=np.float32) / 255.
    arr = arr + rng.normal(0, cam['noise'], arr.shape)
    return Image.fromarray((np.clip(arr, 0, 1) * 255 + 0.5).astype(np.uint8))


# ---------------------------------------------------------------------------
# The data set
# ---------------------------------------------------------------------------
def _camera_split(rng: np.random.Generator, num_images: int,
                  num_cams: int) -> List[int]:
    """Cameras (0-based) of one identity's images: 2..num_cams cameras, at
    least two images each, the rest spread unevenly."""
    max_cams = min(num_cams, max(num_images // 2, 1))
    k = int(rng.integers(min(2, max_cams), max_cams + 1))
    cams = np.sort(rng.choice(num_cams, size=k, replace=False))
    per_cam = np.full(k, min(2, num_images // k))
    rest = num_images - per_cam.sum()
    per_cam += rng.multinomial(rest, rng.dirichlet(np.full(k, 1.5)))
    return [int(c) for c, n in zip(cams, per_cam) for _ in range(n)]


def _file_name(pid: int, cam: int, seq: int, frame: int, box: int) -> str:
    pid_str = '-1' if pid < 0 else f'{pid:04d}'
    return f'{pid_str}_c{cam + 1}s{seq}_{frame:06d}_{box:02d}.jpg'


class _Namer:
    """Market-style unique names: frames advance along a (id, camera) track."""

    def __init__(self):
        self.used = set()

    def __call__(self, rng, pid, cam, track) -> str:
        if track.get('frame') is None:
            track['seq'] = int(rng.integers(1, 7))
            track['frame'] = int(rng.integers(0, 150000))
        while True:
            track['frame'] += int(rng.integers(5, 80))
            box = int(rng.choice([1, 1, 1, 2, 3, 4]))
            name = _file_name(pid, cam, track['seq'], track['frame'] % 10**6,
                              box)
            if name not in self.used:
                self.used.add(name)
                return name


def _params(**kwargs) -> dict:
    kwargs['size'] = list(kwargs['size'])
    kwargs['generator_version'] = GENERATOR_VERSION
    return kwargs


def _count_tree(root: str) -> Dict[str, int]:
    counts = {}
    for split in SPLIT_DIRS:
        d = osp.join(root, split)
        counts[split] = len([f for f in os.listdir(d)
                             if f.endswith('.jpg')]) if osp.isdir(d) else -1
    return counts


def _complete(out_dir: str, params: dict) -> Optional[dict]:
    """The stored counts when ``out_dir`` holds a full tree for ``params``."""
    try:
        with open(osp.join(out_dir, META_FILE)) as f:
            meta = json.load(f)
    except (OSError, ValueError):
        return None
    if meta.get('params') != params:
        return None
    counts = meta.get('counts', {})
    on_disk = _count_tree(out_dir)
    if any(on_disk[s] != counts.get(s) for s in SPLIT_DIRS):
        return None
    return counts


def generate_synthetic_reid(out_dir: str,
                            num_train_ids: int = 200,
                            num_test_ids: int = 200,
                            images_per_id: int = 16,
                            num_cams: int = 6,
                            seed: int = 0,
                            size: Tuple[int, int] = (64, 128),
                            num_distractors: Optional[int] = None,
                            num_junk: Optional[int] = None,
                            overwrite: bool = False) -> dict:
    """Write a Market-1501-style synthetic re-ID tree and return its counts.

    Train and test identities are disjoint 4-digit labels drawn from
    ``1 .. num_train_ids + num_test_ids``. Every identity has
    ``images_per_id`` images spread over 2..``num_cams`` cameras (at least two
    per camera). For test identities, ``query/`` holds one image per
    (identity, camera) and ``bounding_box_test/`` the rest, plus distractors
    (identity ``0000``: background or unknown passers-by) and junk (``-1``:
    bad crops of test identities, ignored by the protocol).

    When ``out_dir`` already holds a complete tree written with the same
    parameters (its ``meta.json``), nothing is redone. A tree written by
    this function with other parameters is replaced; any other non-empty
    ``out_dir`` is left alone and raises unless ``overwrite``.

    Args:
        out_dir: root of the tree.
        num_train_ids, num_test_ids: identities per split.
        images_per_id: images of each identity (>= 4).
        num_cams: cameras (1..9: Market names carry one digit).
        seed: everything drawn is a function of it.
        size: (W, H) of the JPEG crops.
        num_distractors: identity-0 gallery images; default ~5% of the
            test identities' images.
        num_junk: identity -1 gallery images; default ~1%.
        overwrite: replace a non-empty ``out_dir`` not written by us.

    Returns:
        dict: ``num_train_ids``, ``num_test_ids``, ``num_train_images``,
        ``num_query``, ``num_gallery`` (distractors and junk included),
        ``num_distractors``, ``num_junk``, and the file count of each split
        directory.
    """
    assert 1 <= num_cams <= 9, 'Market names hold a one-digit camera id'
    assert images_per_id >= 4 and num_train_ids >= 0 and num_test_ids >= 0
    assert num_train_ids + num_test_ids <= 9999
    if num_distractors is None:
        num_distractors = round(0.05 * num_test_ids * images_per_id)
    if num_junk is None:
        num_junk = round(0.01 * num_test_ids * images_per_id)
    params = _params(
        num_train_ids=num_train_ids,
        num_test_ids=num_test_ids,
        images_per_id=images_per_id,
        num_cams=num_cams,
        seed=seed,
        size=tuple(size),
        num_distractors=num_distractors,
        num_junk=num_junk)
    out_dir = osp.abspath(out_dir)
    done = _complete(out_dir, params)
    if done is not None:
        return done
    if osp.isdir(out_dir) and os.listdir(out_dir):
        ours = osp.isfile(osp.join(out_dir, META_FILE))
        if not (ours or overwrite):
            raise FileExistsError(
                f'{out_dir} is not empty and was not written by '
                'generate_synthetic_reid; pass overwrite=True to replace it')

    parent = osp.dirname(out_dir)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(
        prefix=osp.basename(out_dir) + '.partial-', dir=parent)
    # mkdtemp makes a private (0700) directory; the tree is for everyone.
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)
    try:
        counts = _write_tree(tmp, params)
        with open(osp.join(tmp, META_FILE), 'w') as f:
            json.dump(dict(params=params, counts=counts), f, indent=2)
        if osp.isdir(out_dir):
            shutil.rmtree(out_dir)
        try:
            os.rename(tmp, out_dir)
        except OSError:
            # Another process finished the same tree first.
            done = _complete(out_dir, params)
            if done is None:
                raise
            shutil.rmtree(tmp, ignore_errors=True)
            return done
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return counts


def _write_tree(root: str, params: dict) -> dict:
    """Render and save every image of the tree under ``root``."""
    seed = params['seed']
    size = tuple(params['size'])
    num_cams = params['num_cams']
    n_train, n_test = params['num_train_ids'], params['num_test_ids']
    n_img = params['images_per_id']
    for split in SPLIT_DIRS:
        os.makedirs(osp.join(root, split), exist_ok=True)

    cams = [sample_camera(_rng(seed, _CAMERA, c)) for c in range(num_cams)]
    labels = _rng(seed, _SPLIT).permutation(n_train + n_test) + 1
    train_ids = sorted(int(x) for x in labels[:n_train])
    test_ids = sorted(int(x) for x in labels[n_train:])
    namer = _Namer()

    def save(img: Image.Image, split: str, name: str, cam: int) -> None:
        img.save(
            osp.join(root, split, name), quality=cams[cam]['jpeg_quality'])

    n_query = n_gallery = 0
    for split_ids, is_test in ((train_ids, False), (test_ids, True)):
        for pid in split_ids:
            ident = sample_identity(_rng(seed, _IDENTITY, pid))
            cam_of = _camera_split(_rng(seed, _IMAGE, pid), n_img, num_cams)
            tracks = {}
            for k, cam in enumerate(cam_of):
                rng = _rng(seed, _IMAGE, pid, k)
                # Passers-by are people outside both splits.
                passer = (
                    sample_identity(_rng(seed, _PASSER, pid, k))
                    if rng.random() < PASSER_BY_RATE else None)
                img = render_image(ident, cams[cam], rng, size, passer)
                first_in_cam = cam not in tracks
                name = namer(rng, pid, cam, tracks.setdefault(cam, {}))
                if not is_test:
                    split = 'bounding_box_train'
                elif first_in_cam:
                    split, n_query = 'query', n_query + 1
                else:
                    split, n_gallery = 'bounding_box_test', n_gallery + 1
                save(img, split, name, cam)

    # Distractors (0000): background crops and unknown people.
    for k in range(params['num_distractors']):
        rng = _rng(seed, _DISTRACTOR, k)
        cam = int(rng.integers(num_cams))
        person = rng.random() < 0.6
        img = render_image(
            sample_identity(_rng(seed, _DISTRACTOR_ID, k)),
            cams[cam],
            rng,
            size,
            person_scale=rng.uniform(0.6, 1.3) if person else 1.,
            draw_person=person)
        save(img, 'bounding_box_test', namer(rng, 0, cam, {}), cam)
    # Junk (-1): badly framed crops (tiny or cut) of test identities.
    num_junk = params['num_junk'] if test_ids else 0
    for k in range(num_junk):
        rng = _rng(seed, _JUNK, k)
        cam = int(rng.integers(num_cams))
        pid = int(rng.choice(test_ids))
        img = render_image(
            sample_identity(_rng(seed, _IDENTITY, pid)),
            cams[cam],
            rng,
            size,
            person_scale=float(rng.choice([0.35, 2.2])))
        save(img, 'bounding_box_test', namer(rng, -1, cam, {}), cam)

    counts = dict(
        num_train_ids=n_train,
        num_test_ids=n_test,
        num_train_images=n_train * n_img,
        num_query=n_query,
        num_gallery=n_gallery + params['num_distractors'] + num_junk,
        num_distractors=params['num_distractors'],
        num_junk=num_junk)
    counts.update(_count_tree(root))
    return counts


def parse_market_name(name: str) -> Tuple[int, int]:
    """(identity, 0-based camera) of a Market-1501 file name."""
    m = MARKET_NAME.match(osp.basename(name))
    if m is None:
        raise ValueError(f'not a Market-1501 file name: {name}')
    return int(m.group(1)), int(m.group(2)) - 1
