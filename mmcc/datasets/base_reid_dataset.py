import codecs
import logging
import os
import os.path as osp
import re
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
from mmengine.dataset import BaseDataset, force_full_init
from mmengine.logging import print_log

from mmcc.utils import seeded_random_state

SPLITS = ('train', 'query', 'gallery')
# Identities and cameras end up in int64 arrays (get_gt_labels...).
INT64_MIN, INT64_MAX = -2**63, 2**63 - 1
# An optionally signed run of ASCII digits: what a list file may hold for an
# integer (int() would also take '1_000', ' 7' or non-ASCII digits).
_INTEGER = re.compile(r'[+-]?[0-9]+')
# Bad image files quoted by name in the error (the rest are counted).
MAX_BAD_IMAGES_SHOWN = 20
# Leading bytes of the image formats OpenCV/Pillow decode: (name, offset,
# magic). WEBP is 'RIFF' <4-byte size> 'WEBP'.
IMAGE_MAGICS = (
    ('JPEG', 0, b'\xff\xd8\xff'),
    ('PNG', 0, b'\x89PNG\r\n\x1a\n'),
    ('BMP', 0, b'BM'),
    ('GIF', 0, b'GIF8'),
    ('WEBP', 8, b'WEBP'),
    ('TIFF', 0, b'II*\x00'),
    ('TIFF', 0, b'MM\x00*'),
)
_HEADER_SIZE = 12


def to_int64(digits: str) -> Optional[int]:
    """``int(digits)`` if it fits int64, else None.

    ``digits`` is an optionally signed run of ASCII digits. Over-long runs
    are rejected before :func:`int`, which refuses more than 4,300 digits
    with a message naming no file.
    """
    if len(digits.lstrip('+-').lstrip('0')) > 19:
        return None
    value = int(digits)
    return value if INT64_MIN <= value <= INT64_MAX else None


def image_file_problem(path: str) -> Optional[str]:
    """What is wrong with an image file, from its first bytes; None if OK.

    A cheap check, not a decode: the file must be readable, non-empty and
    start like a JPEG, PNG, BMP, GIF, WEBP or TIFF file. A truncated or
    otherwise corrupt image with a valid header passes.

    Args:
        path (str): The file.

    Returns:
        str | None: ``'empty (0 bytes)'``, ``'not an image: starts with
        ...'`` or ``'unreadable (...)'``, or None for a plausible image.
    """
    try:
        # O_NONBLOCK: a FIFO behind a symbolic link must not hang the check
        fd = os.open(path, os.O_RDONLY | getattr(os, 'O_NONBLOCK', 0))
        try:
            head = os.read(fd, _HEADER_SIZE)
        finally:
            os.close(fd)
    except (OSError, ValueError) as e:  # ValueError: a NUL in the path
        return f'unreadable ({type(e).__name__}: ' \
            f'{getattr(e, "strerror", None) or e})'
    if not head:
        return 'empty (0 bytes)'
    for name, offset, magic in IMAGE_MAGICS:
        if head[offset:offset + len(magic)] == magic and (
                name != 'WEBP' or head.startswith(b'RIFF')):
            return None
    return (f'not an image: starts with {head!r}, not a JPEG, PNG, BMP, '
            'GIF, WEBP or TIFF header')


def _short(text: str, limit: int = 60) -> str:
    """``repr(text)``, cut to about ``limit`` characters for messages."""
    return repr(text) if len(text) <= limit else repr(text[:limit]) + '...'


class BaseReIDDataset(BaseDataset):
    """Shared machinery of the image re-ID data sets.

    A re-ID benchmark is three image sets - ``train``, ``query`` and
    ``gallery`` - whose identities and cameras are spelt in the file names.
    One instance holds one split. Every data info carries exactly:

    - ``img_path`` (str): absolute path of the image;
    - ``gt_label`` (int): the identity as written in the file name or list,
      never relabelled, so that query and gallery ids match;
    - ``camid`` (int): 0-based camera index;
    - ``is_query`` (bool): ``split == 'query'``.

    (``sample_idx`` is added by mmengine when an item is fetched.)

    Subclasses describe their layout with class attributes and the default
    :meth:`load_data_list` does the rest:

    - ``SPLIT_FOLDERS``: split -> folder under ``data_root`` (or override
      :meth:`split_folders` when it depends on an argument);
    - ``FILENAME_PATTERN``: a compiled regex that must *fully* match every
      image name, with named groups ``pid`` (identity) and ``cam`` (camera
      number as written);
    - ``IMG_SUFFIX``: only files with this suffix are images; any other file
      (e.g. the ``Thumbs.db`` shipped in Market-1501's folders) and hidden
      files are ignored;
    - ``NAME_EXAMPLE``: a valid name, quoted in errors;
    - ``JUNK_IDS``: identities dropped from every split;
    - ``METAINFO['num_cameras']``: cameras of the data set; file names
      number them ``1..num_cameras`` unless ``camera_ids`` says otherwise.

    An image whose name does not match the naming is an error, not a
    silent skip: a wrong ``data_root`` (say, a Duke tree given to Market)
    is then reported instead of yielding a near-empty data set.

    Every image file is also checked when the data set is loaded (in
    :meth:`load_data_list`, i.e. by ``full_init``: at construction, or when
    the Runner builds the data loader if ``lazy_init=True``), in the main
    process: it must be readable, non-empty and start with a JPEG, PNG,
    BMP, GIF, WEBP or TIFF header (a read of its first 12 bytes, not a
    decode). A bad file is a ``ValueError`` naming every bad file (the
    first 20, then a count) and what is wrong, instead of an OpenCV
    assertion naming no file in a data loader worker at the first epoch or
    validation. ``skip_bad_images=True`` drops them with a warning instead.
    Identities and cameras must fit int64; file names and list files that
    break this are a ``ValueError`` naming the file (and line).

    Args:
        split (str | Sequence[str]): ``'train'``, ``'query'`` or
            ``'gallery'``, or several of them, e.g. ``('query', 'gallery')``
            for one evaluation data set holding the query images followed
            by the gallery (``is_query`` tells them apart).
        data_root (str): Root folder of the data set.
        camera_ids (Sequence[int], optional): Camera numbers as they appear
            in the file names, listed in ``camid`` order: camera
            ``camera_ids[k]`` gets ``camid = k``. Defaults to
            ``1..num_cameras``. Cameras outside the list are errors.
        skip_bad_images (bool): Drop image files that are empty,
            unreadable or have no image header, logging a warning with
            their count, instead of raising a ``ValueError`` naming them.
            Set it in a config like any data set argument, e.g.
            ``dataset=dict(type='Market1501', ..., skip_bad_images=True)``.
            Defaults to False.
        **kwargs: Other arguments of :class:`mmengine.dataset.BaseDataset`
            (``pipeline``, ``test_mode``, ``lazy_init``, ``serialize_data``,
            ``indices``, ``metainfo``...).
    """

    METAINFO: dict = dict(dataset_name='re-ID', num_cameras=None)
    SPLIT_FOLDERS: Dict[str, str] = {}
    FILENAME_PATTERN: Optional[re.Pattern] = None
    NAME_EXAMPLE: str = ''
    IMG_SUFFIX: str = '.jpg'
    JUNK_IDS: Tuple[int, ...] = (-1, )

    def __init__(self,
                 split: Union[str, Sequence[str]],
                 data_root: str = '',
                 camera_ids: Optional[Sequence[int]] = None,
                 skip_bad_images: bool = False,
                 **kwargs):
        self.splits = (split, ) if isinstance(split, str) else tuple(split)
        if not self.splits or any(s not in SPLITS for s in self.splits):
            raise ValueError(f'{type(self).__name__}: unknown split '
                             f'{split!r}; expected one of {SPLITS} or a '
                             'sequence of them.')
        # the split being loaded; load_data_list walks self.splits
        self.split = self.splits[0]
        self.camera_ids = self._resolve_camera_ids(camera_ids)
        self.skip_bad_images = bool(skip_bad_images)
        # image path -> list file:line, for list-based data sets' errors
        self._listed_at: Dict[str, str] = {}
        super().__init__(data_root=data_root, **kwargs)
        if self.camera_ids is not None:
            self._metainfo['num_cameras'] = len(self.camera_ids)

    def _resolve_camera_ids(
            self, camera_ids: Optional[Sequence[int]]) -> Optional[tuple]:
        if camera_ids is not None:
            camera_ids = tuple(int(c) for c in camera_ids)
            if len(set(camera_ids)) != len(camera_ids):
                raise ValueError(f'{type(self).__name__}: camera_ids '
                                 f'{camera_ids} has duplicates.')
            return camera_ids
        num_cameras = self.METAINFO.get('num_cameras')
        return None if num_cameras is None else tuple(
            range(1, num_cameras + 1))

    # -- loading ----------------------------------------------------------
    def load_data_list(self) -> List[dict]:
        """The data infos of every requested split, in the given order.

        Every image file is checked (see :meth:`check_image_files`).
        """
        per_split = []
        self._listed_at = {}
        for split in self.splits:
            self.split = split  # read by the per-split loader and its errors
            per_split.append((split, self.load_split()))
        self.split = self.splits[0]
        try:
            per_split = self.check_image_files(per_split)
        finally:
            self._listed_at = {}
        return [info for _, infos in per_split for info in infos]

    def check_image_files(
        self,
        per_split: List[Tuple[str,
                              List[dict]]]) -> List[Tuple[str, List[dict]]]:
        """Find the empty, unreadable and non-image files among the images.

        Args:
            per_split (list[tuple[str, list[dict]]]): ``(split, infos)`` of
                every loaded split.

        Returns:
            list[tuple[str, list[dict]]]: ``per_split`` without the bad
            files when ``skip_bad_images`` is set.

        Raises:
            ValueError: Some files are bad (naming each and what is wrong),
                or, when skipping, a split has no good image left.
        """
        bad = {}
        for _, infos in per_split:
            for info in infos:
                problem = image_file_problem(info['img_path'])
                if problem is not None:
                    bad[info['img_path']] = problem
        if not bad:
            return per_split
        name = type(self).__name__
        total = sum(len(infos) for _, infos in per_split)
        splits = '+'.join(self.splits)
        if not self.skip_bad_images:
            raise ValueError(
                f'{name}: {len(bad)} of {total} image files of split '
                f'{splits!r} are not usable images:\n' +
                self._describe_bad(bad) + '\nRemove or replace them, or '
                'pass skip_bad_images=True to the data set to skip them.')
        kept = []
        for split, infos in per_split:
            good = [i for i in infos if i['img_path'] not in bad]
            if not good:
                raise ValueError(
                    f'{name}: split {split!r} is empty: all its '
                    f'{len(infos)} image files are bad (skip_bad_images):\n' +
                    self._describe_bad(
                        {i['img_path']: bad[i['img_path']]
                         for i in infos}))
            kept.append((split, good))
        print_log(
            f'{name}: skipped {len(bad)} bad image file(s) of {total} in '
            f'split {splits!r} (skip_bad_images=True):\n' +
            self._describe_bad(bad),
            logger='current',
            level=logging.WARNING)
        return kept

    def _describe_bad(self, bad: Dict[str, str]) -> str:
        """One line per bad file (path, list line, problem), 20 at most."""
        lines = []
        for path, problem in list(bad.items())[:MAX_BAD_IMAGES_SHOWN]:
            listed = self._listed_at.get(path)
            at = f' (listed at {listed})' if listed else ''
            lines.append(f'  {path!r}{at}: {problem}')
        if len(bad) > MAX_BAD_IMAGES_SHOWN:
            lines.append(f'  ... and {len(bad) - MAX_BAD_IMAGES_SHOWN} more')
        return '\n'.join(lines)

    def load_split(self) -> List[dict]:
        """Scan the split's folder, parse every image name, drop junk.

        Images are listed in file-name order, so the data list (and thus
        ``sample_idx``) is the same on every file system. Symbolic links
        count as files even when broken, so that a dangling one is reported
        (unreadable) rather than silently left out.
        """
        folder = self._split_folder()
        with os.scandir(folder) as entries:
            names = sorted(
                e.name for e in entries if e.name.endswith(self.IMG_SUFFIX) and
                not e.name.startswith('.') and (e.is_file() or e.is_symlink()))
        infos = []
        for name in names:
            path = osp.join(folder, name)
            pid, camid = self.parse_filename(name, where=path)
            infos.append(self.make_data_info(path, pid, camid))
        return self.drop_junk(
            infos, source=f'folder {folder!r} (*{self.IMG_SUFFIX})')

    def _split_folder(self) -> str:
        """The split's folder, checked to exist, with a clear error."""
        root = self._checked_root()
        folder = osp.join(root, self.split_folders()[self.split])
        if not osp.isdir(folder):
            raise FileNotFoundError(
                f'{type(self).__name__}: folder {folder!r} (split '
                f'{self.split!r}) not found; expected data_root {root!r} '
                f'to contain {self._expected_layout()}.')
        return folder

    def split_folders(self) -> Dict[str, str]:
        """Split -> image folder under ``data_root``."""
        return dict(self.SPLIT_FOLDERS)

    def _checked_root(self) -> str:
        if not self.data_root:
            raise ValueError(f'{type(self).__name__}: data_root is required.')
        root = osp.abspath(self.data_root)
        if not osp.isdir(root):
            raise FileNotFoundError(f'{type(self).__name__}: data_root '
                                    f'{root!r} is not a folder.')
        return root

    def _expected_layout(self) -> str:
        folders = dict.fromkeys(self.split_folders().values())
        return ', '.join(f'{f}/' for f in folders)

    def parse_filename(self, name: str, where: str) -> Tuple[int, int]:
        """Identity and 0-based camera index of an image name.

        Args:
            name (str): The file's base name.
            where (str): What to name in an error (the file's path, or a
                list file and line).

        Returns:
            tuple[int, int]: ``(pid, camid)``.

        Raises:
            ValueError: The name does not follow the naming, its identity
                does not fit int64 or its camera is not one of
                ``camera_ids``; the message names ``where`` and ``name``.
        """
        match = self.FILENAME_PATTERN.fullmatch(name)
        if match is None:
            raise ValueError(
                f'{type(self).__name__}: {where}: file name {_short(name)} '
                f'does not follow the naming '
                f'{self.FILENAME_PATTERN.pattern!r} '
                f'(e.g. {self.NAME_EXAMPLE!r}).')
        pid = to_int64(match.group('pid'))
        if pid is None:
            raise ValueError(
                f'{type(self).__name__}: {where}: identity '
                f'{_short(match.group("pid"))} in file name {_short(name)} '
                f'out of range (at most {INT64_MAX}).')
        camera = to_int64(match.group('cam'))
        if camera is None:
            raise ValueError(
                f'{type(self).__name__}: {where}: camera '
                f'{_short(match.group("cam"))} in file name {_short(name)} '
                f'out of range; the cameras of this data set are '
                f'{self.camera_ids} (see the camera_ids argument).')
        return pid, self.camera_index(camera, where)

    def camera_index(self, camera: int, where: str) -> int:
        """Map a camera number as written in a name to its ``camid``."""
        try:
            return self.camera_ids.index(camera)
        except ValueError:
            raise ValueError(
                f'{type(self).__name__}: {where}: camera {camera} is not '
                f'one of the cameras {self.camera_ids} of this data set '
                f'(see the camera_ids argument).') from None

    def make_data_info(self, img_path: str, pid: int, camid: int) -> dict:
        """The data info of one image, with exactly the agreed keys."""
        return dict(
            img_path=osp.abspath(img_path),
            gt_label=int(pid),
            camid=int(camid),
            is_query=self.split == 'query')

    def drop_junk(self, infos: List[dict], source: str) -> List[dict]:
        """Remove junk identities; an empty result is an error.

        Args:
            infos (list[dict]): Parsed data infos.
            source (str): Where they came from, named in the error, e.g.
                ``"folder '/data/market/query' (*.jpg)"``.
        """
        kept = [i for i in infos if i['gt_label'] not in self.JUNK_IDS]
        if not kept:
            what = (f'only junk images (ids {self.JUNK_IDS} are dropped)'
                    if infos else 'no images')
            raise ValueError(f'{type(self).__name__}: split {self.split!r} '
                             f'is empty: {source} has {what}.')
        return kept

    def read_list_file(self, list_file: str,
                       num_fields: int) -> List[Tuple[str, List[str]]]:
        """Rows of a whitespace-separated list file.

        Blank lines and lines starting with ``#`` are skipped. The line is
        split from the right, so the first field (a path) may hold spaces.
        The file is UTF-8, optionally with a leading byte order mark (as
        some Windows editors write); lines end with ``\\n``, ``\\r\\n`` or
        ``\\r``.

        Args:
            list_file (str): Path of the list file.
            num_fields (int): Fields every row must have.

        Returns:
            list[tuple[str, list[str]]]: ``(where, fields)`` per row, where
            ``where`` is ``'<list_file>:<line number>'`` for errors.

        Raises:
            FileNotFoundError: ``list_file`` does not exist.
            ValueError: A line is not UTF-8 or has another number of
                fields; the message starts with ``<list_file>:<line>:``.
        """
        if not osp.isfile(list_file):
            raise FileNotFoundError(f'{type(self).__name__}: list file '
                                    f'{list_file!r} not found.')
        with open(list_file, 'rb') as f:
            data = f.read()
        if data.startswith(codecs.BOM_UTF8):
            data = data[len(codecs.BOM_UTF8):]
        rows = []
        # bytes.splitlines() breaks at \n, \r\n and \r only, as reading in
        # text mode does, so line numbers are those of an editor.
        for lineno, raw in enumerate(data.splitlines(), start=1):
            where = f'{list_file}:{lineno}'
            try:
                line = raw.decode('utf-8')
            except UnicodeDecodeError as e:
                raise ValueError(
                    f'{type(self).__name__}: {where}: not UTF-8 (byte '
                    f'{raw[e.start:e.start + 1]!r} at column {e.start + 1} '
                    f'of {_short(raw.decode("utf-8", "replace"))}); save '
                    'the list file as UTF-8.') from None
            text = line.strip()
            if not text or text.startswith('#'):
                continue
            fields = text.rsplit(None, num_fields - 1)
            if len(fields) != num_fields:
                raise ValueError(
                    f'{type(self).__name__}: {where}: malformed line '
                    f'{_short(text)}; expected {num_fields} whitespace-'
                    'separated fields.')
            rows.append((where, fields))
        return rows

    def parse_int(self,
                  value: str,
                  what: str,
                  where: str,
                  minimum: int = INT64_MIN,
                  valid: Optional[str] = None) -> int:
        """An integer field of a list file, or an error naming file:line.

        Args:
            value (str): The field: an optionally signed run of ASCII
                digits.
            what (str): What it is (``'identity'``...), for errors.
            where (str): ``'<list file>:<line>'``, for errors.
            minimum (int): Smallest valid value; the largest is int64's.
            valid (str, optional): The valid values, in words, for the
                out-of-range error. Defaults to ``'minimum..INT64_MAX'``.

        Raises:
            ValueError: ``'<where>: <what> ... is not an integer'`` or
                ``'<where>: <what> ... out of range (...)'``.
        """
        name = type(self).__name__
        if _INTEGER.fullmatch(value) is None:
            raise ValueError(f'{name}: {where}: {what} {_short(value)} is '
                             'not an integer.')
        number = to_int64(value)
        if number is None or number < minimum:
            valid = valid or f'{minimum}..{INT64_MAX}'
            raise ValueError(f'{name}: {where}: {what} {_short(value)} out '
                             f'of range ({valid}).')
        return number

    def parse_pid(self, value: str, where: str) -> int:
        """An identity of a list file: ``-1`` (junk) or ``0..INT64_MAX``."""
        return self.parse_int(
            value,
            'identity',
            where,
            minimum=-1,
            valid=f'-1 for junk, else 0..{INT64_MAX}')

    def check_image(self, img_path: str, where: str) -> None:
        """Fail early, naming the list line, if a listed image is absent.

        The line is also quoted if the file turns out not to be an image
        (see :meth:`check_image_files`).
        """
        if not osp.isfile(img_path):
            raise FileNotFoundError(f'{type(self).__name__}: {where}: image '
                                    f'{img_path!r} not found.')
        self._listed_at.setdefault(osp.abspath(img_path), where)

    # -- helpers for the rest of mmcc --------------------------------------
    def __getitem__(self, idx: Union[int, Tuple[int, int]]) -> dict:
        """Sample ``idx`` through the pipeline; ``(idx, seed)`` runs the
        pipeline's random draws under ``seed``.

        ``IdentityBatchSampler`` hands out such pairs, so that a training
        sample's augmentation depends only on (seed, epoch, batch), not on
        the data-loader worker that draws it (see
        :func:`mmcc.utils.seeded_random_state`).
        """
        if isinstance(idx, tuple):
            idx, seed = idx
            with seeded_random_state(int(seed)):
                return super().__getitem__(idx)
        return super().__getitem__(idx)

    def _collect(self, key: str) -> np.ndarray:
        if self.serialize_data:
            values = [self.get_data_info(i)[key] for i in range(len(self))]
        else:
            values = [info[key] for info in self.data_list]
        return np.asarray(values, dtype=np.int64).reshape(-1)

    @force_full_init
    def get_gt_labels(self) -> np.ndarray:
        """True identities, int64 array (N,) in data-list order."""
        return self._collect('gt_label')

    @force_full_init
    def get_cam_ids(self) -> np.ndarray:
        """0-based camera indices, int64 array (N,) in data-list order."""
        return self._collect('camid')

    @force_full_init
    def get_cat_ids(self, idx: int) -> List[int]:
        """The identity of sample ``idx`` as a one-element list (for
        mmengine's class-balanced wrappers)."""
        return [int(self.get_data_info(idx)['gt_label'])]

    @property
    def num_ids(self) -> int:
        """Number of distinct identities in this split (a distractor id,
        e.g. Market's 0, counts as one)."""
        return int(np.unique(self.get_gt_labels()).size)

    @property
    def num_cams(self) -> int:
        """Number of distinct cameras present in this split; ``camid``
        values lie in ``range(metainfo['num_cameras'])``."""
        return int(np.unique(self.get_cam_ids()).size)
