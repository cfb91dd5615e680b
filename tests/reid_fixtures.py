"""Tiny re-ID data set trees with the real layout and naming of each benchmark.

The images are real JPEGs rendered by
:func:`mmcc.testing.synthetic.generate_synthetic_reid` into a
Market-1501-style source tree; :func:`make_reid_fixture` copies them under the
folders and file names of Market-1501, DukeMTMC-reID, MSMT17 (V1, with its
list files) or VeRi-776, so that the data set classes read them exactly as
they read the releases.

A plain module (no pytest dependency): tests import it with the ``tests``
folder on ``sys.path``.
"""
import os
import os.path as osp
import shutil
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

from mmcc.datasets.naming import parse_market_name
from mmcc.testing.synthetic import generate_synthetic_reid

KINDS = ('market1501', 'dukemtmc_reid', 'msmt17', 'veri776')
# registered data set type -> fixture kind
KIND_OF_DATASET_TYPE = {
    'Market1501': 'market1501',
    'DukeMTMCReID': 'dukemtmc_reid',
    'MSMT17': 'msmt17',
    'VeRi776': 'veri776',
}
DATASET_TYPE_OF_KIND = {v: k for k, v in KIND_OF_DATASET_TYPE.items()}
# source (Market-style) folder of each split
SOURCE_FOLDERS = dict(
    train='bounding_box_train', query='query', gallery='bounding_box_test')
SPLITS = tuple(SOURCE_FOLDERS)


@dataclass
class SourceImage:
    """One image of the Market-style source tree."""
    path: str
    pid: int  # -1 junk, 0 distractor
    cam: int  # 0-based


@dataclass
class ReIDFixture:
    """A written fixture tree and what its data set should load from it.

    ``num_images`` / ``ids`` per split are the images and identities the data
    set class must return (junk dropped; for Market-1501 its distractor
    identity 0 is kept and counts as an id).
    """
    kind: str
    root: str
    dataset_type: str
    num_images: Dict[str, int] = field(default_factory=dict)
    ids: Dict[str, set] = field(default_factory=dict)
    cams: Dict[str, set] = field(default_factory=dict)


def make_synthetic_source(root: str,
                          num_train_ids: int = 6,
                          num_test_ids: int = 3,
                          images_per_id: int = 8,
                          num_cams: int = 3,
                          seed: int = 0,
                          num_distractors: int = 1,
                          num_junk: int = 1) -> str:
    """Render the small Market-style tree the fixtures copy from.

    Defaults: 6 train ids x 8 images, 3 test ids, 3 cameras, one distractor
    and one junk image in the gallery (only Market-1501 keeps those).
    Re-running with the same arguments reuses the tree.
    """
    generate_synthetic_reid(
        root,
        num_train_ids=num_train_ids,
        num_test_ids=num_test_ids,
        images_per_id=images_per_id,
        num_cams=num_cams,
        seed=seed,
        num_distractors=num_distractors,
        num_junk=num_junk)
    return root


def read_source(source: str) -> Dict[str, List[SourceImage]]:
    """The images of every split of a Market-style tree, by file name."""
    images = {}
    for split, folder in SOURCE_FOLDERS.items():
        d = osp.join(source, folder)
        rows = []
        for name in sorted(os.listdir(d)):
            try:
                fields = parse_market_name(name)
            except ValueError:  # meta.json and the like
                continue
            rows.append(
                SourceImage(osp.join(d, name), fields.pid, fields.camera - 1))
        images[split] = rows
    return images


def _people(rows: List[SourceImage]) -> List[SourceImage]:
    """Real identities only (no junk, no distractors)."""
    return [r for r in rows if r.pid > 0]


def _copy(src: str, dst: str) -> None:
    os.makedirs(osp.dirname(dst), exist_ok=True)
    shutil.copyfile(src, dst)


def _write_market(source, root) -> List[Tuple[str, SourceImage]]:
    # Market itself: the names are already right (junk and distractors kept).
    out = []
    for split, rows in source.items():
        for r in rows:
            out.append((osp.join(root, SOURCE_FOLDERS[split],
                                 osp.basename(r.path)), r))
    return out


def _write_duke(source, root) -> List[Tuple[str, SourceImage]]:
    # 0001_c2_f0046182.jpg; the frame is unique within the tree.
    out, frame = [], 46182
    for split, rows in source.items():
        for r in _people(rows):
            frame += 37
            name = f'{r.pid:04d}_c{r.cam + 1}_f{frame:07d}.jpg'
            out.append((osp.join(root, SOURCE_FOLDERS[split], name), r))
    return out


def _write_veri(source, root) -> List[Tuple[str, SourceImage]]:
    # 0001_c001_00016450_0.jpg: vehicle, camera, time stamp, index.
    folders = dict(
        train='image_train', query='image_query', gallery='image_test')
    out, stamp = [], 16450
    for split, rows in source.items():
        for r in _people(rows):
            stamp += 115
            name = f'{r.pid:04d}_c{r.cam + 1:03d}_{stamp:08d}_0.jpg'
            out.append((osp.join(root, folders[split], name), r))
    return out


def _write_msmt(source, root, num_val_per_id: int = 1):
    """MSMT17 V1: ``train/<pid>/<pid>_<idx>_<cam>_0303morning_<frame>_0.jpg``
    and ``test/...``; identities relabelled from 0 in each of the two trees
    (as in the release); the list files hold ``<relative path> <label>``.
    The last ``num_val_per_id`` train images of each identity go to
    ``list_val.txt``."""
    out, lists = [], defaultdict(list)
    for tree, splits in (('train', ('train', )), ('test', ('query',
                                                           'gallery'))):
        rows = [(s, r) for s in splits for r in _people(source[s])]
        label_of = {
            pid: k
            for k, pid in enumerate(sorted({r.pid
                                            for _, r in rows}))
        }
        count = defaultdict(int)
        per_id_total = defaultdict(int)
        for _, r in rows:
            per_id_total[r.pid] += 1
        for split, r in rows:
            label = label_of[r.pid]
            idx = count[r.pid]
            count[r.pid] += 1
            rel = (f'{label:04d}/{label:04d}_{idx:03d}_{r.cam + 1:02d}_'
                   f'0303morning_{15 + 10 * idx:04d}_0.jpg')
            if split == 'train':
                is_val = idx >= per_id_total[r.pid] - num_val_per_id
                list_name = 'list_val.txt' if is_val else 'list_train.txt'
            else:
                list_name = f'list_{split}.txt'
            lists[list_name].append(f'{rel} {label}')
            out.append((osp.join(root, tree, rel), r))
    for list_name in ('list_train.txt', 'list_val.txt', 'list_query.txt',
                      'list_gallery.txt'):
        with open(osp.join(root, list_name), 'w') as f:
            f.write('\n'.join(lists[list_name]) + '\n')
    return out


_WRITERS = dict(
    market1501=_write_market,
    dukemtmc_reid=_write_duke,
    msmt17=_write_msmt,
    veri776=_write_veri)


def make_reid_fixture(kind: str,
                      root: str,
                      source: Optional[str] = None,
                      **source_kwargs) -> ReIDFixture:
    """Write a tiny ``kind`` data set tree under ``root``.

    Args:
        kind (str): One of :data:`KINDS`.
        root (str): Folder to create (must not hold a previous fixture).
        source (str, optional): A Market-style tree to copy the images from
            (see :func:`make_synthetic_source`). Defaults to rendering one in
            ``<root>.source`` with ``source_kwargs``.
        **source_kwargs: Passed to :func:`make_synthetic_source`.

    Returns:
        ReIDFixture: the root and the images, identities and cameras each
        split must load (identities as the data set class reports them:
        MSMT17's are relabelled from 0).
    """
    if kind not in _WRITERS:
        raise ValueError(f'unknown fixture kind {kind!r}; one of {KINDS}')
    if source is None:
        source = make_synthetic_source(
            osp.abspath(root).rstrip(os.sep) + '.source', **source_kwargs)
    elif source_kwargs:
        raise TypeError('source_kwargs only apply when no source is given')
    images = read_source(source)
    os.makedirs(root, exist_ok=True)
    written = _WRITERS[kind](images, root)
    for dst, row in written:
        _copy(row.path, dst)

    fixture = ReIDFixture(kind, osp.abspath(root), DATASET_TYPE_OF_KIND[kind])
    # What each split must load, from the source rows that were written.
    rows_of = {split: [] for split in SPLITS}
    written_src = {row.path for _, row in written}
    for split, rows in images.items():
        rows_of[split] = [
            r for r in rows if r.path in written_src and r.pid != -1
        ]
    for split, rows in rows_of.items():
        fixture.num_images[split] = len(rows)
        pids = sorted({r.pid for r in rows})
        if kind == 'msmt17':  # relabelled per tree; distractors not written
            tree = ('train', ) if split == 'train' else ('query', 'gallery')
            tree_pids = sorted({r.pid for s in tree for r in rows_of[s]})
            pids = [tree_pids.index(p) for p in pids]
        fixture.ids[split] = set(pids)
        fixture.cams[split] = {r.cam for r in rows}
    return fixture
