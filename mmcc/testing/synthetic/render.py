"""Rendering of synthetic re-ID crops: a person, a background, occluders,
and the camera's response, as numpy operations on the pixel grid.

Every function here draws from the generator it is given, in a fixed order:
the images written for a seed depend on that order (see
``GENERATOR_VERSION`` in :mod:`.tree`).
"""
from typing import Dict, Optional, Tuple

import numpy as np
from PIL import Image, ImageFilter

from .identities import BACKGROUND_TEXTURES, PALETTE, VIEWS

# Strength of the nuisances (tuned so that untrained features stay weak
# while identities remain learnable; see tools/analysis_tools/
# synthetic_baselines.py).
OCCLUSION_RATE = 0.15  # images with an occluding box or pole
BACKGROUND_JITTER = 0.15  # s.d. of the per-image log change of its colours
BACKGROUND_SWITCH = 0.3  # images showing another texture than the camera's


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
