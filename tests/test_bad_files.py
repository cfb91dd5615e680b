"""Messy data folders fail when the data set is built, naming the files.

Bad image files (empty, not an image, unreadable) are found by a header
check in ``load_data_list``, not by OpenCV in a data loader worker epochs
later; list files with a byte order mark are read, and non-UTF-8 bytes or
identities that do not fit int64 name ``<file>:<line>``.
"""
import logging
import os
import re
from pathlib import Path

import pytest
from mmengine.logging import MMLogger

import mmcc.datasets.dukemtmc_reid  # noqa: F401  (registers)
import mmcc.datasets.market1501  # noqa: F401
import mmcc.datasets.msmt17  # noqa: F401
import mmcc.datasets.personx  # noqa: F401
import mmcc.datasets.reid_list_dataset  # noqa: F401
import mmcc.datasets.veri776  # noqa: F401
from mmcc.datasets.base_reid_dataset import image_file_problem
from mmcc.registry import DATASETS

REPO_ROOT = Path(__file__).resolve().parents[1]
MARKET_TRAINSPLIT = REPO_ROOT.parent / 'shared' / 'data' / \
    'market1501-trainsplit'
JPEG_HEADER = b'\xff\xd8\xff\xe0\x00\x10JFIF\x00'
GOOD = [
    '0001_c1s1_000001_00.jpg', '0001_c2s1_000002_00.jpg',
    '0002_c3s1_000003_00.jpg'
]
EMPTY = '0003_c1s1_000004_00.jpg'
TEXT = '0003_c2s1_000005_00.jpg'


def build(type_: str, **kwargs):
    kwargs.setdefault('serialize_data', False)
    return DATASETS.build(dict(type=type_, **kwargs))


def write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def esc(text) -> str:
    return re.escape(str(text))


class Captured(logging.Handler):
    """Records of mmengine's current logger while in a ``with`` block."""

    def __enter__(self):
        self.records = []
        self.logger = MMLogger.get_current_instance()
        self.logger.addHandler(self)
        return self

    def __exit__(self, *exc):
        self.logger.removeHandler(self)

    def emit(self, record):
        self.records.append(record)


@pytest.fixture
def messy_market(tmp_path):
    """A Market-1501 tree whose train folder holds a zero-byte JPEG and a
    text file named ``.jpg`` beside three good images."""
    root = tmp_path / 'market'
    for name in GOOD:
        write(root / 'bounding_box_train' / name, JPEG_HEADER)
    write(root / 'bounding_box_train' / EMPTY, b'')
    write(root / 'bounding_box_train' / TEXT, b'<html>404 Not Found</html>\n')
    write(root / 'query' / GOOD[0], JPEG_HEADER)
    return root


def test_bad_images_fail_at_build_naming_each_file(messy_market):
    folder = messy_market / 'bounding_box_train'
    with pytest.raises(ValueError) as info:
        build('Market1501', data_root=str(messy_market), split='train')
    message = str(info.value)
    assert '2 of 5 image files' in message
    assert re.search(esc(folder / EMPTY) + r".*: empty \(0 bytes\)", message)
    assert re.search(
        esc(folder / TEXT) + r".*: not an image: starts with b'<html>",
        message)
    assert 'skip_bad_images=True' in message
    for name in GOOD:
        assert name not in message
    # the other split of the tree is fine
    assert len(
        build('Market1501', data_root=str(messy_market), split='query')) == 1


@pytest.mark.parametrize('serialize_data', [False, True])
def test_bad_images_fail_in_full_init_when_lazy(messy_market, serialize_data):
    """With ``lazy_init=True`` the check runs in ``full_init``, which the
    Runner calls in the main process when it builds the data loader."""
    dataset = build(
        'Market1501',
        data_root=str(messy_market),
        split='train',
        lazy_init=True,
        serialize_data=serialize_data)
    with pytest.raises(ValueError, match=esc(EMPTY)):
        dataset.full_init()


def test_skip_bad_images_keeps_the_rest_and_warns(messy_market):
    with Captured() as log:
        train = build(
            'Market1501',
            data_root=str(messy_market),
            split='train',
            skip_bad_images=True,
            serialize_data=True)
    assert len(train) == 3
    assert [
        os.path.basename(train.get_data_info(i)['img_path']) for i in range(3)
    ] == GOOD
    assert train.get_gt_labels().tolist() == [1, 1, 2]
    warnings = [r for r in log.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    text = warnings[0].getMessage()
    assert 'skipped 2 bad image file(s) of 5' in text
    assert EMPTY in text and TEXT in text

    # from a config, as a data set argument; nothing logged without bad files
    with Captured() as log:
        query = DATASETS.build(
            dict(
                type='Market1501',
                data_root=str(messy_market),
                split='query',
                skip_bad_images=True))
    assert len(query) == 1
    assert not [r for r in log.records if r.levelno >= logging.WARNING]


def test_skip_bad_images_still_rejects_a_split_left_empty(tmp_path):
    root = tmp_path / 'market'
    write(root / 'query' / EMPTY, b'')
    write(root / 'bounding_box_test' / GOOD[0], JPEG_HEADER)
    with pytest.raises(
            ValueError, match="(?s)split 'query' is empty.*" + EMPTY):
        build(
            'Market1501',
            data_root=str(root),
            split=('query', 'gallery'),
            skip_bad_images=True)


def test_many_bad_images_name_twenty_and_count_the_rest(tmp_path):
    root = tmp_path / 'market'
    names = [f'0001_c1s1_{k:06d}_00.jpg' for k in range(25)]
    for name in names:
        write(root / 'bounding_box_train' / name, b'')
    with pytest.raises(ValueError) as info:
        build('Market1501', data_root=str(root), split='train')
    message = str(info.value)
    assert '25 of 25 image files' in message
    assert all(name in message for name in names[:20])
    assert not any(name in message for name in names[20:])
    assert '... and 5 more' in message


def test_broken_symlink_is_reported_unreadable(tmp_path):
    root = tmp_path / 'duke'
    write(root / 'query' / '0001_c1_f0000001.jpg', JPEG_HEADER)
    link = root / 'query' / '0001_c2_f0000002.jpg'
    link.symlink_to(tmp_path / 'gone.jpg')
    with pytest.raises(
            ValueError, match=esc(link) + r".*unreadable \(FileNotFoundError"):
        build('DukeMTMCReID', data_root=str(root), split='query')


def test_header_check_accepts_image_formats(tmp_path):
    headers = dict(
        jpeg=JPEG_HEADER,
        png=b'\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR',
        bmp=b'BM6\x00\x00\x00',
        gif=b'GIF89a\x01\x00',
        webp=b'RIFF\x24\x00\x00\x00WEBPVP8 ',
        tiff_le=b'II*\x00\x08\x00',
        tiff_be=b'MM\x00*\x00\x00')
    for name, data in headers.items():
        assert image_file_problem(str(write(tmp_path / name, data))) is None
    for data in (b'RIFF\x24\x00\x00\x00WAVEfmt ', b'\xff\xd8', b'version '
                 b'https://git-lfs.github.com/spec/v1\n', b'\x00' * 64):
        problem = image_file_problem(str(write(tmp_path / 'bad', data)))
        assert problem.startswith('not an image: starts with')
    assert image_file_problem(str(write(tmp_path / 'e', b''))) == \
        'empty (0 bytes)'
    assert image_file_problem(
        str(tmp_path)).startswith('unreadable (IsADirectoryError')
    assert image_file_problem(str(
        tmp_path / 'missing')).startswith('unreadable (FileNotFoundError')


def test_real_images_pass_the_header_check_cheaply(monkeypatch):
    folder = MARKET_TRAINSPLIT / 'bounding_box_train'
    if not folder.is_dir():
        pytest.skip(f'{folder} is absent (development data)')
    paths = sorted(str(p) for p in folder.glob('*.jpg'))
    assert len(paths) == 6530
    # Cheap means: one read of the header per file, no decode. Count the
    # reads and their sizes, and make any decode through PIL fail loudly.
    import PIL.Image

    import mmcc.datasets.base_reid_dataset as base
    read_sizes = []
    real_read = os.read

    def counting_read(fd, size):
        read_sizes.append(size)
        return real_read(fd, size)

    def no_decode(*args, **kwargs):
        raise AssertionError('the header check decoded an image')

    monkeypatch.setattr(base.os, 'read', counting_read)
    monkeypatch.setattr(PIL.Image, 'open', no_decode)
    problems = [p for p in paths if image_file_problem(p) is not None]
    assert problems == []
    assert len(read_sizes) == len(paths)
    assert max(read_sizes) == base._HEADER_SIZE <= 64


# --------------------------------------------------------------------------
# List files
# --------------------------------------------------------------------------
@pytest.fixture
def list_root(tmp_path):
    write(tmp_path / 'img' / 'a.jpg', JPEG_HEADER)
    write(tmp_path / 'img' / 'b.jpg', JPEG_HEADER)
    return tmp_path


def build_list(root: Path, data: bytes, **kwargs):
    ann = write(root / 'list.txt', data)
    dataset = build(
        'ReIDListDataset',
        data_root=str(root),
        ann_file=str(ann),
        data_prefix=dict(img_path='img'),
        split='train',
        **kwargs)
    return dataset


def test_list_file_with_bom_is_read(list_root):
    dataset = build_list(list_root, b'\xef\xbb\xbfa.jpg 3 0\r\nb.jpg 4 1\r\n')
    assert dataset.get_gt_labels().tolist() == [3, 4]
    assert dataset.get_cam_ids().tolist() == [0, 1]
    # a BOM before a comment: the comment is still skipped
    dataset = build_list(list_root,
                         '\ufeff# path id cam\na.jpg 3 0\n'.encode())
    assert dataset.get_gt_labels().tolist() == [3]


def test_list_file_bad_bytes_and_numbers_name_file_and_line(list_root):
    ann = list_root / 'list.txt'
    cases = [
        ('a.jpg 1 0\ncaf\xe9.jpg 2 0\n'.encode('latin-1'),
         r':2: not UTF-8 \(byte b\'\\xe9\' at column 4'),
        (b'a.jpg 1 0\nb.jpg 100000000000000000000 0\n',
         r':2: identity \'100000000000000000000\' out of range \(-1 for junk'),
        (b'a.jpg 9223372036854775808 0\n', r':1: identity .* out of range'),
        (b'a.jpg -2 0\n', r":1: identity '-2' out of range"),
        (b'a.jpg 1 100000000000000000000\n',
         r":1: camera '100000000000000000000' out of range"),
        (b'a.jpg 1 -1\n', r":1: camera '-1' out of range"),
        (b'a.jpg 1_000 0\n', r":1: identity '1_000' is not an integer"),
        ('a.jpg \u0664\u0662 0\n'.encode(), r':1: identity .* not an integer'),
        (b'a.jpg 1' + b'0' * 5000 + b' 0\n', r':1: identity .*out of range'),
        (b'a.jpg 1\n', r':1: malformed line'),
    ]
    for data, pattern in cases:
        with pytest.raises(ValueError, match=esc(ann) + pattern):
            build_list(list_root, data)
    # int64's extremes are fine
    dataset = build_list(
        list_root, b'a.jpg 9223372036854775807 '
        b'9223372036854775807\nb.jpg -1 0\nb.jpg 0 0\n')
    assert dataset.get_gt_labels().tolist() == [2**63 - 1, 0]
    assert dataset.get_cam_ids().tolist() == [2**63 - 1, 0]


def test_list_file_bad_image_names_the_list_line(list_root):
    write(list_root / 'img' / 'empty.jpg', b'')
    ann = list_root / 'list.txt'
    with pytest.raises(
            ValueError,
            match=esc(list_root / 'img' / 'empty.jpg') + r"' \(listed at " +
            esc(ann) + r':2\): empty'):
        build_list(list_root, b'a.jpg 1 0\nempty.jpg 2 0\n')
    dataset = build_list(
        list_root, b'a.jpg 1 0\nempty.jpg 2 0\n', skip_bad_images=True)
    assert dataset.get_gt_labels().tolist() == [1]


def test_msmt17_list_bom_latin1_and_range(tmp_path):
    root = tmp_path / 'msmt'
    rel = '0000/0000_000_01_0303morning_0015_0.jpg'
    write(root / 'test' / rel, JPEG_HEADER)
    write(root / 'list_query.txt', b'\xef\xbb\xbf' + rel.encode() + b' 0\n')
    query = build('MSMT17', data_root=str(root), split='query')
    assert query.get_gt_labels().tolist() == [0]
    lst = root / 'list_query.txt'
    for data, pattern in [
        (rel.encode() + b' 0\n0000/\xff.jpg 0\n', r':2: not UTF-8'),
        (rel.encode() + b' 100000000000000000000\n',
         r':1: identity .* out of range'),
        (b'0000/99999999999999999999_000_01_0303morning_0015_0.jpg 0\n',
         r':1: identity .*99999999999999999999_000_01.* out of range'),
        (b'0000/0000_000_999999999999999999999_0303morning_0015_0.jpg 0\n',
         r':1: camera .* out of range'),
    ]:
        write(lst, data)
        with pytest.raises(ValueError, match=esc(lst) + pattern):
            build('MSMT17', data_root=str(root), split='query')
    write(root / 'test' / rel, b'')
    write(lst, rel.encode() + b' 0\n')
    with pytest.raises(ValueError, match=esc(lst) + r':1\): empty'):
        build('MSMT17', data_root=str(root), split='query')


# --------------------------------------------------------------------------
# File names
# --------------------------------------------------------------------------
@pytest.mark.parametrize('type_,folder,name,pattern', [
    ('Market1501', 'query', '99999999999999999999_c1s1_000001_00.jpg',
     'identity .* out of range'),
    ('Market1501', 'query', '\u0660\u0660\u0660\u0661_c1s1_000001_00.jpg',
     'does not follow the naming'),
    ('DukeMTMCReID', 'query', '99999999999999999999_c1_f0000001.jpg',
     'identity .* out of range'),
    ('VeRi776', 'image_query', '0001_c99999999999999999999_00000001_0.jpg',
     'camera .* out of range'),
    ('VeRi776', 'image_query', '0001_c0000000000000000000000001_0_0.jpg',
     None),
    ('PersonX', 'query', '0001_c100000000000000000000s1.jpg',
     'camera .* out of range'),
    ('PersonX', 'query', '-2_c3s1.jpg', 'does not follow the naming'),
])
def test_out_of_range_file_names_raise_naming_the_file(tmp_path, type_, folder,
                                                       name, pattern):
    path = write(tmp_path / folder / name, JPEG_HEADER)
    if pattern is None:  # leading zeros: in range
        assert len(build(type_, data_root=str(tmp_path), split='query')) == 1
        return
    with pytest.raises(ValueError, match=esc(path) + '.*' + pattern):
        build(type_, data_root=str(tmp_path), split='query')


def test_market_naming_rejects_out_of_range_numbers():
    from mmcc.datasets.naming import market_name, parse_market_name
    big = 2**63
    with pytest.raises(ValueError, match='frame 9223372036854775808 out of'):
        parse_market_name(f'0001_c1s1_{big}_00.jpg')
    with pytest.raises(ValueError, match='pid .* out of range'):
        parse_market_name('1' + '0' * 5000 + '_c1s1_000001_00.jpg')
    with pytest.raises(ValueError, match='no Market-1501 name'):
        market_name(big, 1, 1, 1, 1)
    assert parse_market_name(market_name(big - 1, 1, 1, big - 1,
                                         0)) == (big - 1, 1, 1, big - 1, 0)
