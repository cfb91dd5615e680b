import hashlib
import json
import os
import os.path as osp
from collections import defaultdict

import numpy as np
import pytest
from PIL import Image

from mmcc.datasets.naming import market_name, parse_market_name
from mmcc.testing.synthetic import (SPLIT_DIRS, generate_synthetic_reid,
                                    render_image, sample_camera,
                                    sample_identity)

TINY = dict(
    num_train_ids=4,
    num_test_ids=4,
    images_per_id=8,
    num_cams=3,
    num_distractors=3,
    num_junk=2)


def tree_digest(root):
    digest = hashlib.sha256()
    for split in SPLIT_DIRS:
        for name in sorted(os.listdir(osp.join(root, split))):
            digest.update(name.encode())
            with open(osp.join(root, split, name), 'rb') as f:
                digest.update(f.read())
    return digest.hexdigest()


def list_tree(root):
    """split -> list of (name, identity, 0-based camera)."""
    out = {}
    for split in SPLIT_DIRS:
        names = sorted(os.listdir(osp.join(root, split)))
        fields = [parse_market_name(n) for n in names]
        out[split] = [(n, f.pid, f.camera - 1) for n, f in zip(names, fields)]
    return out


@pytest.fixture(scope='module')
def tiny_tree(tmp_path_factory):
    root = str(tmp_path_factory.mktemp('synthetic') / 'tree')
    counts = generate_synthetic_reid(root, seed=3, **TINY)
    return root, counts


def test_same_seed_same_bytes_other_seed_differs(tiny_tree, tmp_path):
    root, _ = tiny_tree
    again = str(tmp_path / 'again')
    other = str(tmp_path / 'other')
    generate_synthetic_reid(again, seed=3, **TINY)
    generate_synthetic_reid(other, seed=4, **TINY)
    assert tree_digest(again) == tree_digest(root)
    assert tree_digest(other) != tree_digest(root)


def test_rendering_in_worker_processes_writes_the_same_bytes(
        tiny_tree, tmp_path):
    """Workers render identities out of order; the names (which depend on
    the names taken before) and the bytes are those of one process."""
    root, counts = tiny_tree
    pooled = str(tmp_path / 'pooled')
    assert generate_synthetic_reid(pooled, seed=3, workers=2, **TINY) == counts
    assert tree_digest(pooled) == tree_digest(root)


def test_layout_names_and_image_format(tiny_tree):
    root, _ = tiny_tree
    assert sorted(os.listdir(root)) == sorted(SPLIT_DIRS + ('meta.json', ))
    umask = os.umask(0)
    os.umask(umask)
    assert os.stat(root).st_mode & 0o777 == 0o777 & ~umask
    for split, files in list_tree(root).items():
        assert files, split
        for name, pid, cam in files:
            # padded as in the release: 4-digit ids, 6-digit frames...
            assert market_name(*parse_market_name(name)) == name
            assert 0 <= cam < TINY['num_cams']
            if split != 'bounding_box_test':
                assert pid >= 1, name
    name = list_tree(root)['query'][0][0]
    with Image.open(osp.join(root, 'query', name)) as img:
        assert img.format == 'JPEG'
        assert img.mode == 'RGB' and img.size == (64, 128)


def test_counts_match_the_files(tiny_tree):
    root, counts = tiny_tree
    files = list_tree(root)
    n_img = TINY['images_per_id']
    assert counts['bounding_box_train'] == len(files['bounding_box_train'])
    assert counts['query'] == counts['num_query'] == len(files['query'])
    assert counts['bounding_box_test'] == counts['num_gallery'] == len(
        files['bounding_box_test'])
    assert counts['num_train_images'] == TINY['num_train_ids'] * n_img
    assert len(files['bounding_box_train']) == TINY['num_train_ids'] * n_img
    gallery_ids = [pid for _, pid, _ in files['bounding_box_test']]
    assert gallery_ids.count(0) == TINY['num_distractors']
    assert gallery_ids.count(-1) == TINY['num_junk']
    test_images = len(files['query']) + sum(pid > 0 for pid in gallery_ids)
    assert test_images == TINY['num_test_ids'] * n_img
    with open(osp.join(root, 'meta.json')) as f:
        assert json.load(f)['counts'] == counts


def test_ids_disjoint_and_query_one_per_id_and_camera(tiny_tree):
    root, _ = tiny_tree
    files = list_tree(root)
    train_ids = {pid for _, pid, _ in files['bounding_box_train']}
    query = [(pid, cam) for _, pid, cam in files['query']]
    gallery = [(pid, cam) for _, pid, cam in files['bounding_box_test']
               if pid > 0]
    test_ids = {pid for pid, _ in query}
    assert len(train_ids) == TINY['num_train_ids']
    assert len(test_ids) == TINY['num_test_ids']
    assert not train_ids & test_ids
    assert {pid for pid, _ in gallery} == test_ids
    # One query per (identity, camera) in which the identity appears, and
    # every query has a match from another camera in the gallery.
    assert len(set(query)) == len(query)
    cams_of = defaultdict(set)
    for pid, cam in query + gallery:
        cams_of[pid].add(cam)
    assert set(query) == {(p, c) for p, cams in cams_of.items() for c in cams}
    for pid, cam in query:
        assert any(p == pid and c != cam for p, c in gallery)
        assert len(cams_of[pid]) >= 2


def test_names_are_unique_and_junk_is_named_like_market(tiny_tree):
    root, _ = tiny_tree
    names = [n for files in list_tree(root).values() for n, _, _ in files]
    assert len(names) == len(set(names))
    assert any(n.startswith('-1_c') for n in names)
    assert any(n.startswith('0000_c') for n in names)


def test_complete_tree_is_reused_and_changed_parameters_regenerate(tmp_path):
    root = str(tmp_path / 'tree')
    params = dict(TINY, num_train_ids=2, num_test_ids=2)
    counts = generate_synthetic_reid(root, **params)
    name = sorted(os.listdir(osp.join(root, 'query')))[0]
    path = osp.join(root, 'query', name)
    os.utime(path, (1, 1))
    assert generate_synthetic_reid(root, **params) == counts
    assert os.stat(path).st_mtime == 1  # untouched
    # An incomplete tree is redone.
    os.remove(path)
    assert generate_synthetic_reid(root, **params) == counts
    assert os.path.isfile(path)
    # Other parameters replace our own tree.
    more = generate_synthetic_reid(root, **dict(params, num_train_ids=3))
    assert more['bounding_box_train'] == 3 * TINY['images_per_id']
    assert len(os.listdir(osp.join(root, 'bounding_box_train'))) == \
        more['bounding_box_train']


def test_foreign_directory_is_not_overwritten(tmp_path):
    root = tmp_path / 'mine'
    root.mkdir()
    (root / 'notes.txt').write_text('keep me')
    with pytest.raises(FileExistsError):
        generate_synthetic_reid(str(root), **TINY)
    assert (root / 'notes.txt').read_text() == 'keep me'


def test_identity_and_camera_both_shape_the_pixels():
    rng = np.random.default_rng
    person, other = sample_identity(rng(1)), sample_identity(rng(2))
    cam_a, cam_b = sample_camera(rng(3)), sample_camera(rng(4))

    def pixels(ident, cam, seed):
        return np.asarray(render_image(ident, cam, rng(seed)), np.float32)

    a = pixels(person, cam_a, 5)
    assert a.shape == (128, 64, 3)
    assert np.array_equal(a, pixels(person, cam_a, 5))
    assert not np.array_equal(a, pixels(person, cam_a, 6))
    assert not np.array_equal(a, pixels(other, cam_a, 5))
    assert not np.array_equal(a, pixels(person, cam_b, 5))
