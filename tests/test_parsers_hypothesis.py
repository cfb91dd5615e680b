"""Property-based tests of the file-name parsers and list-file readers.

On arbitrary input they raise ``ValueError`` (the documented error, naming
the file name or ``<list file>:<line>``; a list naming a missing image is the
documented ``FileNotFoundError``) and nothing else; on names and list files
built from valid fields they give those fields back.

Hypothesis' example database is off (``database=None``); its other caches
go to ``.hypothesis/``, which it git-ignores itself. List files go to a
``tempfile`` folder per example (pytest's function-scoped ``tmp_path``
would be shared by all examples). ``--hypothesis-show-statistics`` shows
which errors the list-file tests reached.
"""
import os
import os.path as osp
import re
import tempfile

from hypothesis import event, given, settings
from hypothesis import strategies as st

import mmcc.datasets.dukemtmc_reid  # noqa: F401  (registers)
import mmcc.datasets.market1501  # noqa: F401
import mmcc.datasets.msmt17  # noqa: F401
import mmcc.datasets.personx  # noqa: F401
import mmcc.datasets.reid_list_dataset  # noqa: F401
import mmcc.datasets.veri776  # noqa: F401
from mmcc.datasets.base_reid_dataset import INT64_MAX
from mmcc.datasets.naming import MarketName, market_name, parse_market_name
from mmcc.registry import DATASETS

FAST = settings(max_examples=200, deadline=None, database=None)
JPEG_HEADER = b'\xff\xd8\xff\xe0\x00\x10JFIF\x00'
NAMING_TYPES = ('Market1501', 'DukeMTMCReID', 'VeRi776', 'MSMT17', 'PersonX')
# Data sets that only parse names (lazy: no file is read).
PARSERS = {
    type_:
    DATASETS.build(
        dict(
            type=type_,
            split='train',
            data_root='/nonexistent',
            lazy_init=True))
    for type_ in NAMING_TYPES
}
LIST_PARSER = DATASETS.build(
    dict(
        type='ReIDListDataset',
        ann_file='/nonexistent/list.txt',
        split='train',
        lazy_init=True))

# Any character, surrogates included (os.listdir yields them for file names
# that are not UTF-8).
any_char = st.one_of(st.characters(), st.characters(categories=['Cs']))
any_text = st.text(any_char, max_size=80)
# Text close to the namings, to reach deeper into the patterns.
near_name = st.text(
    st.sampled_from(list('0123456789_-cfs.jpgmorning\u0663 ')), max_size=40)
pids = st.one_of(st.just(-1), st.integers(0, INT64_MAX))
naturals = st.integers(0, INT64_MAX)
# Around and beyond int64's maximum.
huge = st.one_of(
    st.integers(INT64_MAX - 2, INT64_MAX + 2), st.integers(0, 10**25))


def pid_str(pid: int) -> str:
    return '-1' if pid == -1 else f'{pid:04d}'


def check_parse(type_: str, name: str) -> None:
    """``parse_filename`` gives an int64 pid and a valid camid, or a
    ValueError naming the file; nothing else."""
    dataset = PARSERS[type_]
    try:
        pid, camid = dataset.parse_filename(name, where=f'/d/{name}')
    except ValueError as e:
        assert f'/d/{name}' in str(e)
        return
    assert -1 <= pid <= INT64_MAX
    assert 0 <= camid < len(dataset.camera_ids)
    # every naming starts with the identity, in ASCII digits
    assert int(re.match(r'-1|[0-9]+', name).group()) == pid


# Each naming with any identity and camera number, huge ones included.
BUILDERS = {
    'Market1501': lambda p, c: f'{p}_c{c}s1_000451_03.jpg',
    'DukeMTMCReID': lambda p, c: f'{p}_c{c}_f0046182.jpg',
    'VeRi776': lambda p, c: f'{p}_c{c:03d}_00016450_0.jpg',
    'MSMT17': lambda p, c: f'{p}_000_{c:02d}_0303morning_0015_0.jpg',
    'PersonX': lambda p, c: f'{p}_c{c}s1_000001_00.jpg',
}


# --------------------------------------------------------------------------
# File names
# --------------------------------------------------------------------------
@FAST
@given(st.one_of(any_text, near_name))
def test_parse_market_name_raises_only_value_error(name):
    try:
        fields = parse_market_name(name)
    except ValueError as e:
        assert repr(name) in str(e)
        return
    assert all(0 <= f <= INT64_MAX for f in fields[1:])
    assert -1 <= fields.pid <= INT64_MAX


@FAST
@given(st.sampled_from(NAMING_TYPES), st.one_of(any_text, near_name))
def test_parse_filename_raises_only_value_error(type_, name):
    check_parse(type_, name)


@FAST
@given(st.data())
def test_parse_filename_on_names_matching_the_pattern(data):
    """Names the regex accepts, with any numbers (huge ones included)."""
    type_ = data.draw(st.sampled_from(NAMING_TYPES))
    pattern = PARSERS[type_].FILENAME_PATTERN
    check_parse(type_, data.draw(st.from_regex(pattern, fullmatch=True)))


@FAST
@given(
    st.sampled_from(NAMING_TYPES), st.one_of(naturals, huge),
    st.one_of(st.integers(0, 25), huge))
def test_parse_filename_numbers_out_of_range(type_, pid, camera):
    dataset = PARSERS[type_]
    name = BUILDERS[type_](pid, camera)
    in_range = pid <= INT64_MAX and camera in dataset.camera_ids
    # Market and Duke write the camera with one digit
    if type_ in ('Market1501', 'DukeMTMCReID') and camera > 9:
        in_range = False
    try:
        parsed = dataset.parse_filename(name, where=f'/d/{name}')
    except ValueError as e:
        assert not in_range and f'/d/{name}' in str(e)
        return
    assert in_range and parsed == (pid, dataset.camera_ids.index(camera))


@FAST
@given(pids, st.integers(0, 9), naturals, naturals, naturals)
def test_market_name_round_trips(pid, camera, seq, frame, box):
    name = market_name(pid, camera, seq, frame, box)
    assert parse_market_name(name) == MarketName(pid, camera, seq, frame, box)
    assert parse_market_name(f'/some/folder/{name}') == (pid, camera, seq,
                                                         frame, box)
    if 1 <= camera <= 6:
        assert PARSERS['Market1501'].parse_filename(
            name, where=name) == (pid, camera - 1)


@FAST
@given(pids, st.integers(1, 8), naturals)
def test_duke_name_round_trips(pid, camera, frame):
    name = f'{pid_str(pid)}_c{camera}_f{frame:07d}.jpg'
    assert PARSERS['DukeMTMCReID'].parse_filename(
        name, where=name) == (pid, camera - 1)


@FAST
@given(pids, st.integers(1, 20), naturals, naturals)
def test_veri_name_round_trips(pid, camera, stamp, index):
    name = f'{pid_str(pid)}_c{camera:03d}_{stamp:08d}_{index}.jpg'
    assert PARSERS['VeRi776'].parse_filename(
        name, where=name) == (pid, camera - 1)


@FAST
@given(
    naturals, naturals, st.integers(1, 15),
    st.lists(
        st.text(any_char.filter(lambda c: c != '_'), min_size=1, max_size=8),
        min_size=1,
        max_size=4))
def test_msmt_name_round_trips(pid, index, camera, rest):
    name = f'{pid:04d}_{index:03d}_{camera:02d}_{"_".join(rest)}.jpg'
    assert PARSERS['MSMT17'].parse_filename(
        name, where=name) == (pid, camera - 1)


@FAST
@given(
    pids, st.sampled_from((3, 4, 8, 10, 11, 12)),
    st.one_of(
        st.just(''),
        st.builds(lambda head, tail: head + tail,
                  any_char.filter(lambda c: c not in '0123456789\n'),
                  st.text(any_char.filter(lambda c: c != '\n'), max_size=20))))
def test_personx_name_round_trips(pid, camera, tail):
    name = f'{pid_str(pid)}_c{camera}{tail}.jpg'
    camid = (3, 4, 8, 10, 11, 12).index(camera)
    assert PARSERS['PersonX'].parse_filename(name, where=name) == (pid, camid)


@FAST
@given(st.one_of(any_text, st.integers().map(str)), st.integers(-5, 5))
def test_parse_int_raises_only_value_error(value, minimum):
    try:
        number = LIST_PARSER.parse_int(value, 'identity', 'f:1', minimum)
    except ValueError as e:
        assert str(e).startswith('ReIDListDataset: f:1: identity ')
        return
    assert re.fullmatch(r'[+-]?[0-9]+', value)
    assert number == int(value) and minimum <= number <= INT64_MAX


# --------------------------------------------------------------------------
# List files
# --------------------------------------------------------------------------
def check_list_error(error: Exception, list_file: str, num_lines: int):
    """A list-file error names the file and, for a line, a real line."""
    message = str(error)
    # --hypothesis-show-statistics lists which errors were reached
    what = re.split(r"['(]", message.split('.txt')[-1])[0]
    what = re.sub(r'^:\d+', '', what).strip(': ') or 'empty split'
    event(f'{type(error).__name__}: {what}')
    assert list_file in message, message
    for line in re.findall(re.escape(list_file) + r':(\d+)', message):
        assert 1 <= int(line) <= max(num_lines, 1), message


# Lines mixing valid fields with the messy input users produce.
messy_line = st.one_of(
    st.builds(lambda p, c: f'x.jpg {p} {c}'.encode(), pids, naturals),
    st.builds(lambda p, c: f'x.jpg {p} {c}'.encode(), st.integers(),
              st.integers()),
    st.sampled_from([
        b'', b'# comment', b'x.jpg 1', b'x.jpg 1 0 0', b'y.jpg 1 0',
        b'x.jpg 100000000000000000000 0', b'x.jpg \xe9 0', b'\xef\xbb\xbf',
        b'x.jpg 1 \xff', b'x.jpg \x00 0', b'x.jpg\t1\t0\r', b'x.jpg 1_0 0',
        'x.jpg \u0664 0'.encode(), b'sub 1 0', b'\xed\xa0\x80 1 0'
    ]),
    st.binary(max_size=30),
)


def list_bytes(line):
    """Arbitrary bytes, or list files of ``line`` s with any BOM and EOL."""
    return st.one_of(
        st.binary(max_size=300),
        st.builds(lambda bom, lines, eol: bom + eol.join(lines),
                  st.sampled_from([b'', b'\xef\xbb\xbf']),
                  st.lists(line, max_size=6),
                  st.sampled_from([b'\n', b'\r\n', b'\r'])))


MSMT_REL = '0000/0000_000_01_0303morning_0015_0.jpg'
# MSMT17 lines are '<path> <identity>'
msmt_line = st.one_of(
    messy_line,
    st.builds(lambda p: f'{MSMT_REL} {p}'.encode(), pids),
    st.builds(lambda p, c: f'0000/{p}_000_{c}_0303noon_1_0.jpg 0'.encode(),
              st.integers(-2, 10**25), st.integers(-2, 10**25)),
)


@FAST
@given(list_bytes(messy_line))
def test_list_dataset_raises_only_documented_errors(data):
    with tempfile.TemporaryDirectory() as root:
        with open(osp.join(root, 'x.jpg'), 'wb') as f:
            f.write(JPEG_HEADER)
        os.mkdir(osp.join(root, 'sub'))  # a folder listed as an image
        list_file = osp.join(root, 'list.txt')
        with open(list_file, 'wb') as f:
            f.write(data)
        try:
            dataset = DATASETS.build(
                dict(
                    type='ReIDListDataset',
                    ann_file=list_file,
                    data_root=root,
                    split='train',
                    serialize_data=False))
        except (ValueError, FileNotFoundError) as e:
            # FileNotFoundError: a listed image is missing (documented)
            check_list_error(e, list_file, len(data.splitlines()))
            return
        event('loaded')
        assert len(dataset) >= 1
        assert dataset.get_gt_labels().min() >= 0
        assert dataset.get_cam_ids().min() >= 0


@FAST
@given(list_bytes(msmt_line))
def test_msmt17_list_raises_only_documented_errors(data):
    with tempfile.TemporaryDirectory() as root:
        os.makedirs(osp.join(root, 'test', '0000'))
        with open(osp.join(root, 'test', MSMT_REL), 'wb') as f:
            f.write(JPEG_HEADER)
        list_file = osp.join(root, 'list_query.txt')
        with open(list_file, 'wb') as f:
            f.write(data)
        try:
            DATASETS.build(
                dict(
                    type='MSMT17',
                    data_root=root,
                    split='query',
                    serialize_data=False))
        except (ValueError, FileNotFoundError) as e:
            check_list_error(e, list_file, len(data.splitlines()))
            return
        event('loaded')


@FAST
@given(
    st.lists(st.tuples(pids, naturals), min_size=1, max_size=8), st.booleans(),
    st.sampled_from(['\n', '\r\n']), st.booleans())
def test_list_file_round_trips(rows, bom, eol, decorate):
    text = ''.join((f'# row {k}{eol}\n  ' if decorate else '') +
                   f'my images/x.jpg {pid} {cam}{eol}'
                   for k, (pid, cam) in enumerate(rows))
    with tempfile.TemporaryDirectory() as root:
        os.mkdir(osp.join(root, 'my images'))
        with open(osp.join(root, 'my images', 'x.jpg'), 'wb') as f:
            f.write(JPEG_HEADER)
        list_file = osp.join(root, 'list.txt')
        with open(list_file, 'wb') as f:
            f.write((b'\xef\xbb\xbf' if bom else b'') + text.encode())
        kept = [(pid, cam) for pid, cam in rows if pid != -1]
        cfg = dict(
            type='ReIDListDataset',
            ann_file=list_file,
            data_root=root,
            split='gallery',
            serialize_data=False)
        if not kept:
            try:
                DATASETS.build(cfg)
            except ValueError as e:
                assert 'only junk' in str(e)
                return
            raise AssertionError('a junk-only list was accepted')
        dataset = DATASETS.build(cfg)
        assert dataset.get_gt_labels().tolist() == [p for p, _ in kept]
        assert dataset.get_cam_ids().tolist() == [c for _, c in kept]
