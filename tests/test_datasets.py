"""Re-ID data sets: parsing of each benchmark's naming, and clear errors.

Fixture trees are built in ``tmp_path`` with each data set's real naming;
images are placeholders holding only a JPEG header (what the data sets'
load-time check reads; see ``test_bad_files.py``) except where a pipeline
loads them.
"""
import os.path as osp
import re
from pathlib import Path

import numpy as np
import pytest
from mmengine.dataset import ConcatDataset

import mmcc.datasets.dukemtmc_reid  # noqa: F401  (registers)
import mmcc.datasets.market1501  # noqa: F401
import mmcc.datasets.msmt17  # noqa: F401
import mmcc.datasets.personx  # noqa: F401
import mmcc.datasets.reid_list_dataset  # noqa: F401
import mmcc.datasets.veri776  # noqa: F401
from mmcc.registry import DATASETS

REPO_ROOT = Path(__file__).resolve().parents[1]
MARKET_TRAINSPLIT = REPO_ROOT.parent / 'shared' / 'data' / \
    'market1501-trainsplit'
INFO_KEYS = {'img_path', 'gt_label', 'camid', 'is_query', 'sample_idx'}
# A JPEG start (SOI + APP0 marker): passes the data sets' header check, but
# does not decode.
JPEG_HEADER = b'\xff\xd8\xff\xe0\x00\x10JFIF\x00'


def touch(folder: Path, *names: str) -> None:
    """Placeholder images (a JPEG header only) ``folder/name``."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(JPEG_HEADER)


def write_jpeg(path: Path, value: int) -> None:
    from PIL import Image
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new('RGB', (8, 16), (value, value, value)).save(path, 'JPEG')


def build(type_: str, **kwargs):
    # mmengine's serialisation runs gc.collect() (~0.3 s with torch loaded)
    # per data set: off for fixtures, on where a test says so.
    kwargs.setdefault('serialize_data', False)
    return DATASETS.build(dict(type=type_, **kwargs))


def infos(dataset):
    return [dataset.get_data_info(i) for i in range(len(dataset))]


def has_path(path) -> str:
    """A ``match=`` pattern: the message names ``path``."""
    return re.escape(str(path))


# --------------------------------------------------------------------------
# Market-1501
# --------------------------------------------------------------------------
MARKET_TRAIN = [
    '0002_c1s1_000451_03.jpg', '0002_c2s1_000301_01.jpg',
    '0007_c6s3_094042_02.jpg', '-1_c3s1_000551_01.jpg'
]
MARKET_QUERY = [
    '0001_c1s1_001051_00.jpg', '0001_c5s1_001226_00.jpg',
    '0003_c2s1_000176_01.jpg'
]
MARKET_GALLERY = [
    '0000_c1s1_000151_01.jpg', '0001_c2s1_000601_02.jpg',
    '0003_c4s2_002551_04.jpg', '-1_c1s1_000401_03.jpg', '-1_c6s4_001234_05.jpg'
]


@pytest.fixture
def market_root(tmp_path):
    root = tmp_path / 'market'
    touch(root / 'bounding_box_train', *MARKET_TRAIN, 'Thumbs.db',
          '.0002_c1s1_000451_03.jpg')
    touch(root / 'query', *MARKET_QUERY)
    touch(root / 'bounding_box_test', *MARKET_GALLERY, 'Thumbs.db')
    return root


def test_market_parses_ids_cameras_and_drops_junk(market_root):
    train = build('Market1501', data_root=str(market_root), split='train')
    query = build('Market1501', data_root=str(market_root), split='query')
    gallery = build('Market1501', data_root=str(market_root), split='gallery')

    # junk (-1) dropped; Thumbs.db and hidden files ignored; name order.
    assert len(train) == 3 and len(query) == 3 and len(gallery) == 3
    assert train.get_gt_labels().tolist() == [2, 2, 7]
    assert train.get_cam_ids().tolist() == [0, 1, 5]
    # raw ids kept (no relabelling), so query and gallery ids agree.
    assert query.get_gt_labels().tolist() == [1, 1, 3]
    assert query.get_cam_ids().tolist() == [0, 4, 1]
    # the distractor 0 is kept in the gallery.
    assert gallery.get_gt_labels().tolist() == [0, 1, 3]
    assert gallery.get_cam_ids().tolist() == [0, 1, 3]

    for dataset, is_query in ((train, False), (query, True), (gallery, False)):
        for info in infos(dataset):
            assert set(info) == INFO_KEYS
            assert info['is_query'] is is_query
            assert osp.isabs(info['img_path'])
            assert osp.isfile(info['img_path'])
            assert type(info['gt_label']) is int
            assert type(info['camid']) is int
    assert infos(query)[2]['img_path'] == str(market_root / 'query' /
                                              '0003_c2s1_000176_01.jpg')

    labels = gallery.get_gt_labels()
    assert labels.dtype == np.int64 and labels.shape == (3, )
    assert gallery.get_cam_ids().dtype == np.int64
    assert (train.num_ids, train.num_cams) == (2, 3)
    assert (gallery.num_ids, gallery.num_cams) == (3, 3)
    assert train.metainfo == dict(dataset_name='Market-1501', num_cameras=6)
    assert train.get_cat_ids(2) == [7]


def test_market_pipeline_packs_label_camera_and_query_flag(tmp_path):
    root = tmp_path / 'market'
    touch(root / 'bounding_box_train', MARKET_TRAIN[0])
    touch(root / 'bounding_box_test', MARKET_GALLERY[0])
    for value, name in enumerate(MARKET_QUERY):
        write_jpeg(root / 'query' / name, 40 * value)
    pipeline = [
        dict(type='LoadImageFromFile'),
        dict(
            type='mmpretrain.PackInputs',
            meta_keys=('sample_idx', 'img_path', 'camid', 'is_query'))
    ]
    query = build(
        'Market1501', data_root=str(root), split='query', pipeline=pipeline)

    packed = query[1]
    assert tuple(packed['inputs'].shape) == (3, 16, 8)
    sample = packed['data_samples']
    assert sample.gt_label.tolist() == [1]
    assert sample.camid == 4
    assert sample.is_query is True
    assert sample.sample_idx == 1
    assert sample.img_path.endswith('0001_c5s1_001226_00.jpg')


def test_market_serialized_and_plain_lists_agree(market_root):
    kwargs = dict(data_root=str(market_root), split='gallery')
    plain = build('Market1501', serialize_data=False, **kwargs)
    packed = build('Market1501', serialize_data=True, **kwargs)
    assert plain.get_gt_labels().tolist() == packed.get_gt_labels().tolist()
    assert plain.get_cam_ids().tolist() == packed.get_cam_ids().tolist()
    subset = packed.get_subset([2, 0])
    assert subset.get_gt_labels().tolist() == [3, 0]


def test_query_and_gallery_concatenate(market_root):
    # The evaluation loader may concatenate query and gallery: that needs
    # identical metainfo across splits.
    both = ConcatDataset([
        build(
            'Market1501',
            data_root=str(market_root),
            split=split,
            serialize_data=True) for split in ('query', 'gallery')
    ])
    flags = [both.get_data_info(i)['is_query'] for i in range(len(both))]
    assert flags == [True] * 3 + [False] * 3


def test_lazy_init_defers_all_file_access(tmp_path):
    missing = tmp_path / 'nowhere'
    dataset = build(
        'Market1501', data_root=str(missing), split='train', lazy_init=True)
    with pytest.raises(FileNotFoundError, match=has_path(missing)):
        len(dataset)


def test_market_rejects_unknown_split(market_root):
    with pytest.raises(ValueError, match=r"unknown split 'val'"):
        build('Market1501', data_root=str(market_root), split='val')


def test_market_rejects_missing_root_and_folder(tmp_path, market_root):
    missing = tmp_path / 'no_such_root'
    with pytest.raises(FileNotFoundError, match=has_path(missing)):
        build('Market1501', data_root=str(missing), split='train')
    with pytest.raises(ValueError, match='data_root is required'):
        build('Market1501', split='train')

    # A root of the wrong layout names the missing folder and the layout.
    wrong = tmp_path / 'veri_like'
    touch(wrong / 'image_train', '0001_c001_00016450_0.jpg')
    folder = wrong / 'bounding_box_train'
    with pytest.raises(FileNotFoundError, match=has_path(folder) + '.*query/'):
        build('Market1501', data_root=str(wrong), split='train')


def test_market_rejects_foreign_file_name(market_root):
    bad = market_root / 'query' / '0001_c2_f0046182.jpg'  # a Duke name
    touch(bad.parent, bad.name)
    with pytest.raises(ValueError, match=has_path(bad)):
        build('Market1501', data_root=str(market_root), split='query')


def test_market_rejects_unknown_camera(market_root):
    bad = market_root / 'query' / '0001_c7s1_001051_00.jpg'
    touch(bad.parent, bad.name)
    with pytest.raises(ValueError, match=has_path(bad) + '.*camera 7'):
        build('Market1501', data_root=str(market_root), split='query')


def test_market_rejects_empty_and_junk_only_splits(tmp_path):
    root = tmp_path / 'market'
    touch(root / 'bounding_box_train', 'readme.txt')
    touch(root / 'query', '-1_c1s1_000401_03.jpg')
    with pytest.raises(
            ValueError,
            match=has_path(root / 'bounding_box_train') + '.*no images'):
        build('Market1501', data_root=str(root), split='train')
    with pytest.raises(
            ValueError, match=has_path(root / 'query') + '.*only junk'):
        build('Market1501', data_root=str(root), split='query')


def test_market_naming_builds_and_parses_one_pattern():
    from mmcc.datasets.market1501 import Market1501
    from mmcc.datasets.naming import (MARKET_NAME_PATTERN, market_name,
                                      parse_market_name)
    assert Market1501.FILENAME_PATTERN is MARKET_NAME_PATTERN
    assert market_name(2, 1, 1, 451, 3) == '0002_c1s1_000451_03.jpg'
    assert market_name(-1, 6, 2, 1, 1) == '-1_c6s2_000001_01.jpg'
    assert parse_market_name('/x/0002_c1s1_000451_03.jpg') == (2, 1, 1, 451, 3)
    fields = parse_market_name('-1_c6s2_000001_01.jpg')
    assert (fields.pid, fields.camera) == (-1, 6)
    # widths are not enforced when reading (as before)
    assert parse_market_name('12_c3s10_7_1.jpg') == (12, 3, 10, 7, 1)
    for name in ('0002_c1_f0046182.jpg', '0002_c12s1_000451_03.jpg',
                 '0002_c1s1_000451_03.png', 'x0002_c1s1_000451_03.jpg'):
        with pytest.raises(ValueError, match='not a Market-1501'):
            parse_market_name(name)
    for bad in (dict(pid=-2), dict(camera=10), dict(frame=-1)):
        with pytest.raises(ValueError, match='no Market-1501 name'):
            market_name(
                **dict(dict(pid=1, camera=1, seq=1, frame=1, box=1), **bad))


# --------------------------------------------------------------------------
# DukeMTMC-reID, VeRi-776, PersonX
# --------------------------------------------------------------------------
def test_duke_parses_eight_cameras(tmp_path):
    root = tmp_path / 'duke'
    touch(root / 'bounding_box_train', '0001_c2_f0046182.jpg',
          '0001_c8_f0000123.jpg', '0005_c1_f0100000.jpg')
    touch(root / 'query', '0005_c3_f0046999.jpg')
    touch(root / 'bounding_box_test', '0005_c7_f0047000.jpg',
          '0009_c1_f0047001.jpg')
    train = build('DukeMTMCReID', data_root=str(root), split='train')
    assert train.get_gt_labels().tolist() == [1, 1, 5]
    assert train.get_cam_ids().tolist() == [1, 7, 0]
    assert train.metainfo['num_cameras'] == 8
    query = build('DukeMTMCReID', data_root=str(root), split='query')
    assert infos(query)[0]['is_query'] is True
    gallery = build('DukeMTMCReID', data_root=str(root), split='gallery')
    assert gallery.get_cam_ids().tolist() == [6, 0]

    bad = root / 'query' / '0005_c1s1_000451_03.jpg'  # a Market name
    touch(bad.parent, bad.name)
    with pytest.raises(ValueError, match=has_path(bad)):
        build('DukeMTMCReID', data_root=str(root), split='query')


def test_veri_parses_twenty_cameras(tmp_path):
    root = tmp_path / 'veri'
    touch(root / 'image_train', '0001_c001_00016450_0.jpg',
          '0002_c020_00084400_1.jpg')
    touch(root / 'image_query', '0002_c011_00084310_0.jpg')
    touch(root / 'image_test', '0002_c012_00084320_0.jpg')
    touch(root, 'name_train.txt')
    train = build('VeRi776', data_root=str(root), split='train')
    assert train.get_gt_labels().tolist() == [1, 2]
    assert train.get_cam_ids().tolist() == [0, 19]
    query = build('VeRi776', data_root=str(root), split='query')
    assert query.get_cam_ids().tolist() == [10]
    assert infos(query)[0]['is_query'] is True
    assert len(build('VeRi776', data_root=str(root), split='gallery')) == 1

    bad = root / 'image_test' / '0003_c021_00084320_0.jpg'
    touch(bad.parent, bad.name)
    with pytest.raises(ValueError, match=has_path(bad) + '.*camera 21'):
        build('VeRi776', data_root=str(root), split='gallery')
    with pytest.raises(
            FileNotFoundError, match=has_path(tmp_path / 'x' / 'image_train')):
        touch(tmp_path / 'x' / 'bounding_box_train', '0001_c1s1_0_0.jpg')
        build('VeRi776', data_root=str(tmp_path / 'x'), split='train')


def test_personx_maps_sparse_cameras(tmp_path):
    root = tmp_path / 'personx'
    touch(root / 'bounding_box_train', '0001_c3s1_000001_00.jpg',
          '0001_c12s1_000011_00.jpg', '0002_c10_000002.jpg', '0003_c8.jpg',
          '-1_c4s1_000001_00.jpg')
    touch(root / 'query', '0004_c4s1_000001_00.jpg')
    touch(root / 'bounding_box_test', '0000_c11s1_000001_00.jpg',
          '0004_c3s1_000002_00.jpg')
    train = build('PersonX', data_root=str(root), split='train')
    assert train.get_gt_labels().tolist() == [1, 1, 2, 3]
    # cameras (3, 4, 8, 10, 11, 12) -> camid 0..5, as the reference maps.
    assert train.get_cam_ids().tolist() == [5, 0, 3, 2]
    assert train.metainfo['num_cameras'] == 6
    assert build(
        'PersonX', data_root=str(root),
        split='query').get_cam_ids().tolist() == [1]
    gallery = build('PersonX', data_root=str(root), split='gallery')
    assert gallery.get_gt_labels().tolist() == [0, 4]
    assert gallery.get_cam_ids().tolist() == [4, 0]

    # PersonX_v1 numbers its cameras 1..6: rejected by default, read with
    # camera_ids.
    v1 = tmp_path / 'personx_v1'
    touch(v1 / 'query', '0001_c1s1_000001_00.jpg', '0001_c6s1_000002_00.jpg')
    with pytest.raises(
            ValueError,
            match=has_path(v1 / 'query' / '0001_c1s1_000001_00.jpg')):
        build('PersonX', data_root=str(v1), split='query')
    query = build(
        'PersonX',
        data_root=str(v1),
        split='query',
        camera_ids=(1, 2, 3, 4, 5, 6))
    assert query.get_cam_ids().tolist() == [0, 5]


# --------------------------------------------------------------------------
# MSMT17
# --------------------------------------------------------------------------
MSMT_LISTS = {
    'list_train.txt': [
        '0000/0000_000_01_0303morning_0015_0.jpg 0',
        '0000/0000_001_05_0303noon_0321_1.jpg 0',
        '0001/0001_000_15_0113afternoon_0001_2.jpg 1'
    ],
    'list_val.txt': ['0001/0001_001_02_0113morning_0731_0.jpg 1'],
    'list_query.txt': ['0000/0000_000_03_0302morning_0001_0.jpg 0'],
    'list_gallery.txt': [
        '0000/0000_001_07_0302noon_0102_0.jpg 0',
        '0002/0002_000_12_0302noon_0005_1.jpg 2'
    ],
}


def make_msmt(root: Path, train_folder='train', test_folder='test'):
    for list_name, lines in MSMT_LISTS.items():
        folder = test_folder if list_name in (
            'list_query.txt', 'list_gallery.txt') else train_folder
        touch(root / folder, *(line.split()[0] for line in lines))
        (root / list_name).write_text('\n'.join(lines) + '\n')
    return root


def test_msmt17_reads_lists_and_camera_field(tmp_path):
    root = make_msmt(tmp_path / 'msmt')
    train = build('MSMT17', data_root=str(root), split='train')
    assert train.get_gt_labels().tolist() == [0, 0, 1, 1]  # train + val
    assert train.get_cam_ids().tolist() == [0, 4, 14, 1]
    assert infos(train)[3]['img_path'] == str(
        root / 'train' / '0001' / '0001_001_02_0113morning_0731_0.jpg')
    no_val = build('MSMT17', data_root=str(root), split='train', use_val=False)
    assert len(no_val) == 3
    query = build('MSMT17', data_root=str(root), split='query')
    assert query.get_cam_ids().tolist() == [2]
    assert infos(query)[0]['is_query'] is True
    gallery = build('MSMT17', data_root=str(root), split='gallery')
    assert gallery.get_gt_labels().tolist() == [0, 2]
    assert gallery.get_cam_ids().tolist() == [6, 11]
    assert infos(gallery)[1]['img_path'].startswith(str(root / 'test'))
    assert gallery.metainfo['num_cameras'] == 15


def test_msmt17_v2_folders(tmp_path):
    root = make_msmt(tmp_path / 'msmt_v2', 'mask_train_v2', 'mask_test_v2')
    train = build('MSMT17', data_root=str(root), split='train', version='V2')
    assert len(train) == 4
    assert '/mask_train_v2/' in infos(train)[0]['img_path']
    # V1 folders absent: named, with the expected layout.
    with pytest.raises(
            FileNotFoundError,
            match=has_path(root / 'test') + '.*list_gallery'):
        build('MSMT17', data_root=str(root), split='gallery')
    with pytest.raises(ValueError, match="unknown version 'V3'"):
        build('MSMT17', data_root=str(root), split='train', version='V3')


def test_msmt17_rejects_bad_lists(tmp_path):
    root = make_msmt(tmp_path / 'msmt')
    val = root / 'list_val.txt'
    val.unlink()
    with pytest.raises(FileNotFoundError, match=has_path(val)):
        build('MSMT17', data_root=str(root), split='train')
    assert len(
        build('MSMT17', data_root=str(root), split='train',
              use_val=False)) == 3

    query = root / 'list_query.txt'
    query.write_text('0000/0000_000_03_0302morning_0001_0.jpg 0\n'
                     '0000/0000_000_03_0302morning_0001_0.jpg\n')
    with pytest.raises(
            ValueError, match=has_path(f'{query}:2') + '.*malformed'):
        build('MSMT17', data_root=str(root), split='query')
    query.write_text('0000/0000_000_03_0302morning_0001_0.jpg zero\n')
    with pytest.raises(ValueError, match=has_path(f'{query}:1')):
        build('MSMT17', data_root=str(root), split='query')
    query.write_text('0000/0000_c3_f0001.jpg 0\n')
    with pytest.raises(
            ValueError, match=has_path(f'{query}:1') + '.*0000_c3_f0001'):
        build('MSMT17', data_root=str(root), split='query')
    query.write_text('\n0000/0000_009_03_0302morning_0001_0.jpg 0\n')
    missing = root / 'test' / '0000' / '0000_009_03_0302morning_0001_0.jpg'
    with pytest.raises(
            FileNotFoundError,
            match=has_path(f'{query}:2') + '.*' + has_path(missing)):
        build('MSMT17', data_root=str(root), split='query')
    query.write_text('')
    with pytest.raises(ValueError, match=has_path(query) + '.*no images'):
        build('MSMT17', data_root=str(root), split='query')


# --------------------------------------------------------------------------
# ReIDListDataset
# --------------------------------------------------------------------------
def test_list_dataset_reads_paths_ids_and_cameras(tmp_path):
    root = tmp_path / 'mine'
    touch(root / 'img', 'a/1.png', 'a/2.png', 'b c/3.png', 'b c/4.png')
    ann = root / 'meta' / 'query.txt'
    ann.parent.mkdir(parents=True)
    ann.write_text('# path identity camera\n'
                   'a/1.png 42 0\n'
                   '\n'
                   '   # indented comment\n'
                   'b c/3.png 7 3\n'
                   'a/2.png -1 1\n'
                   'b c/4.png 0 2\n')
    query = build(
        'ReIDListDataset',
        data_root=str(root),
        ann_file='meta/query.txt',
        data_prefix=dict(img_path='img'),
        split='query')
    assert query.get_gt_labels().tolist() == [42, 7, 0]  # -1 dropped
    assert query.get_cam_ids().tolist() == [0, 3, 2]
    first = infos(query)[1]
    assert set(first) == INFO_KEYS and first['is_query'] is True
    assert first['img_path'] == str(root / 'img' / 'b c' / '3.png')

    gallery = build(
        'ReIDListDataset',
        data_root=str(root),
        ann_file=str(ann),
        data_prefix=dict(img_path=str(root / 'img')),
        split='gallery')
    assert not any(info['is_query'] for info in infos(gallery))

    with pytest.raises(ValueError, match=has_path(f'{ann}:5') + '.*< 3'):
        build(
            'ReIDListDataset',
            data_root=str(root),
            ann_file=str(ann),
            data_prefix=dict(img_path='img'),
            split='query',
            metainfo=dict(num_cameras=3))


def test_list_dataset_rejects_bad_input(tmp_path):
    touch(tmp_path, 'x.jpg')
    ann = tmp_path / 'list.txt'
    kwargs = dict(data_root=str(tmp_path), ann_file='list.txt')

    with pytest.raises(FileNotFoundError, match=has_path(ann)):
        build('ReIDListDataset', split='train', **kwargs)
    ann.write_text('x.jpg 1 0\nx.jpg 1\n')
    with pytest.raises(ValueError, match=has_path(f'{ann}:2') + '.*malf'):
        build('ReIDListDataset', split='train', **kwargs)
    ann.write_text('x.jpg 1 cam0\n')
    with pytest.raises(ValueError, match=has_path(f'{ann}:1') + '.*cam0'):
        build('ReIDListDataset', split='train', **kwargs)
    ann.write_text('x.jpg 1 -2\n')
    with pytest.raises(ValueError, match=has_path(f'{ann}:1') + '.*-2'):
        build('ReIDListDataset', split='train', **kwargs)
    ann.write_text('y.jpg 1 0\n')
    with pytest.raises(FileNotFoundError, match=has_path(tmp_path / 'y.jpg')):
        build('ReIDListDataset', split='train', **kwargs)
    ann.write_text('# nothing yet\n')
    with pytest.raises(ValueError, match=has_path(ann) + '.*no images'):
        build('ReIDListDataset', split='train', **kwargs)
    with pytest.raises(ValueError, match="unknown split 'test'"):
        build('ReIDListDataset', split='test', **kwargs)


# --------------------------------------------------------------------------
# Real Market-1501 images, re-split (../shared/data/market1501-trainsplit)
# --------------------------------------------------------------------------
def test_market1501_trainsplit_statistics():
    if not MARKET_TRAINSPLIT.is_dir():
        pytest.skip(f'{MARKET_TRAINSPLIT} is absent (development data, not '
                    'shipped with mmcc)')
    splits = {
        split:
        build('Market1501', data_root=str(MARKET_TRAINSPLIT), split=split)
        for split in ('train', 'query', 'gallery')
    }
    assert {
        s: len(d)
        for s, d in splits.items()
    } == dict(
        train=6530, query=1655, gallery=4751)
    # 4 query identities (0059, 0084, 0086, 1237) had one image per camera,
    # all taken as queries: the gallery holds 372 of the 376 test ids.
    assert {
        s: d.num_ids
        for s, d in splits.items()
    } == dict(
        train=375, query=376, gallery=372)
    assert all(d.num_cams == 6 for d in splits.values())
    train_ids = set(splits['train'].get_gt_labels().tolist())
    query_ids = set(splits['query'].get_gt_labels().tolist())
    gallery_ids = set(splits['gallery'].get_gt_labels().tolist())
    assert not train_ids & query_ids
    assert gallery_ids < query_ids
    assert query_ids - gallery_ids == {59, 84, 86, 1237}


def test_query_and_gallery_in_one_dataset(tmp_path):
    """``split=('query', 'gallery')``: the evaluation set of the configs."""
    from mmcc.datasets.market1501 import Market1501
    root = tmp_path / 'market'
    names = {
        'query': ['0001_c1s1_000001_00.jpg', '0002_c2s1_000001_00.jpg'],
        'bounding_box_test': [
            '0001_c2s1_000002_00.jpg', '0000_c3s1_000003_00.jpg',
            '-1_c1s1_000004_00.jpg'
        ],
        'bounding_box_train': ['0005_c1s1_000001_00.jpg'],
    }
    for folder, files in names.items():
        (root / folder).mkdir(parents=True)
        for name in files:
            (root / folder / name).write_bytes(JPEG_HEADER)
    both = Market1501(
        split=('query', 'gallery'), data_root=str(root), lazy_init=False)
    assert [both.get_data_info(i)['is_query']
            for i in range(len(both))] == [True, True, False, False]
    assert both.get_gt_labels().tolist() == [1, 2, 0, 1]
    with pytest.raises(ValueError, match='unknown split'):
        Market1501(split=('query', 'test'), data_root=str(root))
