"""The synthetic data set on disk: Market-1501's folders and names.

:func:`generate_synthetic_reid` renders every image of a tree and writes it
atomically, with a ``meta.json`` holding the parameters and the counts, so
that a complete tree is reused and an incomplete or outdated one redone.
"""
import io
import json
import multiprocessing
import os
import os.path as osp
import shutil
import tempfile
from typing import Dict, List, Optional, Tuple

import numpy as np
from PIL import Image

from mmcc.datasets.naming import market_name
from .identities import sample_camera, sample_identity
from .render import render_image

# Bump when the images drawn for given parameters change: a cached tree with
# another version is regenerated.
GENERATOR_VERSION = 2

SPLIT_DIRS = ('bounding_box_train', 'query', 'bounding_box_test')
META_FILE = 'meta.json'

# Stream keys: every identity / camera / image has its own generator.
_IDENTITY, _CAMERA, _IMAGE, _SPLIT = 1, 2, 3, 4
_PASSER, _DISTRACTOR, _DISTRACTOR_ID, _JUNK = 5, 6, 7, 8
# Strength of the nuisances (tuned so that untrained features stay weak
# while identities remain learnable; see tools/analysis_tools/
# synthetic_baselines.py).
PASSER_BY_RATE = 0.08  # images with a passer-by next to the person


def _rng(seed: int, *keys: int) -> np.random.Generator:
    """The generator of one stream: a function of ``(seed, *keys)``."""
    return np.random.default_rng([int(seed), *[int(k) for k in keys]])


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
            name = market_name(pid, cam + 1, track['seq'],
                               track['frame'] % 10**6, box)
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
                            overwrite: bool = False,
                            workers: Optional[int] = None) -> dict:
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
        workers: processes that render (0: this one). Default: one per
            CPU when the tree has 500 images or more. The bytes written are
            the same for any number.

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
        counts = _write_tree(tmp, params, workers)
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


def _jpeg(img: Image.Image, cam: dict) -> bytes:
    """The JPEG file of a crop, at the camera's quality."""
    buffer = io.BytesIO()
    img.save(buffer, format='JPEG', quality=cam['jpeg_quality'])
    return buffer.getvalue()


def _generator_after(state: dict) -> np.random.Generator:
    """A generator that continues from a ``bit_generator.state``."""
    bit_generator = getattr(np.random, state['bit_generator'])()
    bit_generator.state = state
    return np.random.Generator(bit_generator)


# Rendering is the cost (a few ms a crop); it runs in worker processes, one
# job per identity, distractor or junk crop. Each job returns its crops as
# JPEG bytes, with the state its generator was left in: the main process
# names the files from there in the sequential order (the names of one
# identity depend on those already taken), so the tree is the same bytes
# with any number of workers.


def _render_identity(job):
    """(camera, JPEG, generator state) of every image of one identity."""
    seed, pid, n_img, cams, size = job
    ident = sample_identity(_rng(seed, _IDENTITY, pid))
    cam_of = _camera_split(_rng(seed, _IMAGE, pid), n_img, len(cams))
    images = []
    for k, cam in enumerate(cam_of):
        rng = _rng(seed, _IMAGE, pid, k)
        # Passers-by are people outside both splits.
        passer = (
            sample_identity(_rng(seed, _PASSER, pid, k))
            if rng.random() < PASSER_BY_RATE else None)
        img = render_image(ident, cams[cam], rng, size, passer)
        images.append((cam, _jpeg(img, cams[cam]), rng.bit_generator.state))
    return images


def _render_distractor(job):
    """Identity 0000: a background crop or an unknown person."""
    seed, k, cams, size = job
    rng = _rng(seed, _DISTRACTOR, k)
    cam = int(rng.integers(len(cams)))
    person = rng.random() < 0.6
    img = render_image(
        sample_identity(_rng(seed, _DISTRACTOR_ID, k)),
        cams[cam],
        rng,
        size,
        person_scale=rng.uniform(0.6, 1.3) if person else 1.,
        draw_person=person)
    return cam, _jpeg(img, cams[cam]), rng.bit_generator.state


def _render_junk(job):
    """Identity -1: a badly framed crop (tiny or cut) of a test identity."""
    seed, k, cams, size, test_ids = job
    rng = _rng(seed, _JUNK, k)
    cam = int(rng.integers(len(cams)))
    pid = int(rng.choice(test_ids))
    img = render_image(
        sample_identity(_rng(seed, _IDENTITY, pid)),
        cams[cam],
        rng,
        size,
        person_scale=float(rng.choice([0.35, 2.2])))
    return cam, _jpeg(img, cams[cam]), rng.bit_generator.state


def _rendered(pool, function, jobs):
    """``function`` over ``jobs`` in order, in the pool if there is one."""
    if pool is None:
        return map(function, jobs)
    return pool.imap(function, jobs, chunksize=4)


def _default_workers(num_images: int) -> int:
    # below a few hundred crops, starting processes costs more than it saves
    if num_images < 500:
        return 0
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cpus = os.cpu_count() or 1
    return cpus if cpus > 1 else 0


def _write_tree(root: str, params: dict, workers: Optional[int]) -> dict:
    """Render and save every image of the tree under ``root``, rendering in
    ``workers`` processes (0: in this one; None: one per CPU for large
    trees)."""
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
    num_junk = params['num_junk'] if test_ids else 0
    if workers is None:
        workers = _default_workers((n_train + n_test) * n_img +
                                   params['num_distractors'] + num_junk)
    namer = _Namer()

    def save(data: bytes, split: str, name: str) -> None:
        with open(osp.join(root, split, name), 'wb') as f:
            f.write(data)

    n_query = n_gallery = 0
    pool = multiprocessing.Pool(workers) if workers > 1 else None
    try:
        ids = [(pid, False) for pid in train_ids]
        ids += [(pid, True) for pid in test_ids]
        jobs = [(seed, pid, n_img, cams, size) for pid, _ in ids]
        for (pid,
             is_test), images in zip(ids,
                                     _rendered(pool, _render_identity, jobs)):
            tracks = {}
            for cam, data, state in images:
                first_in_cam = cam not in tracks
                name = namer(
                    _generator_after(state), pid, cam,
                    tracks.setdefault(cam, {}))
                if not is_test:
                    split = 'bounding_box_train'
                elif first_in_cam:
                    split, n_query = 'query', n_query + 1
                else:
                    split, n_gallery = 'bounding_box_test', n_gallery + 1
                save(data, split, name)

        # Distractors (0000): background crops and unknown people.
        jobs = [(seed, k, cams, size)
                for k in range(params['num_distractors'])]
        for cam, data, state in _rendered(pool, _render_distractor, jobs):
            save(data, 'bounding_box_test',
                 namer(_generator_after(state), 0, cam, {}))
        # Junk (-1): badly framed crops (tiny or cut) of test identities.
        jobs = [(seed, k, cams, size, test_ids) for k in range(num_junk)]
        for cam, data, state in _rendered(pool, _render_junk, jobs):
            save(data, 'bounding_box_test',
                 namer(_generator_after(state), -1, cam, {}))
    finally:
        if pool is not None:
            pool.terminate()

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
