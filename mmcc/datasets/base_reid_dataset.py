import os
import os.path as osp
import re
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
from mmengine.dataset import BaseDataset, force_full_init

SPLITS = ('train', 'query', 'gallery')


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
                 **kwargs):
        self.splits = (split, ) if isinstance(split, str) else tuple(split)
        if not self.splits or any(s not in SPLITS for s in self.splits):
            raise ValueError(f'{type(self).__name__}: unknown split '
                             f'{split!r}; expected one of {SPLITS} or a '
                             'sequence of them.')
        # the split being loaded; load_data_list walks self.splits
        self.split = self.splits[0]
        self.camera_ids = self._resolve_camera_ids(camera_ids)
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
        """The data infos of every requested split, in the given order."""
        infos = []
        for split in self.splits:
            self.split = split  # read by the per-split loader and its errors
            infos += self.load_split()
        self.split = self.splits[0]
        return infos

    def load_split(self) -> List[dict]:
        """Scan the split's folder, parse every image name, drop junk.

        Images are listed in file-name order, so the data list (and thus
        ``sample_idx``) is the same on every file system.
        """
        folder = self._split_folder()
        with os.scandir(folder) as entries:
            names = sorted(
                e.name for e in entries if e.name.endswith(self.IMG_SUFFIX)
                and not e.name.startswith('.') and e.is_file())
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
        """
        match = self.FILENAME_PATTERN.fullmatch(name)
        if match is None:
            raise ValueError(
                f'{type(self).__name__}: {where}: file name {name!r} does '
                f'not follow the naming {self.FILENAME_PATTERN.pattern!r} '
                f'(e.g. {self.NAME_EXAMPLE!r}).')
        pid = int(match.group('pid'))
        return pid, self.camera_index(int(match.group('cam')), where)

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

        Args:
            list_file (str): Path of the list file.
            num_fields (int): Fields every row must have.

        Returns:
            list[tuple[str, list[str]]]: ``(where, fields)`` per row, where
            ``where`` is ``'<list_file>:<line number>'`` for errors.
        """
        if not osp.isfile(list_file):
            raise FileNotFoundError(f'{type(self).__name__}: list file '
                                    f'{list_file!r} not found.')
        rows = []
        with open(list_file, encoding='utf-8') as f:
            for lineno, line in enumerate(f, start=1):
                text = line.strip()
                if not text or text.startswith('#'):
                    continue
                fields = text.rsplit(None, num_fields - 1)
                where = f'{list_file}:{lineno}'
                if len(fields) != num_fields:
                    raise ValueError(
                        f'{type(self).__name__}: {where}: malformed line '
                        f'{text!r}; expected {num_fields} whitespace-'
                        'separated fields.')
                rows.append((where, fields))
        return rows

    def parse_int(self, value: str, what: str, where: str) -> int:
        """``int(value)``, or an error naming the list file and line."""
        try:
            return int(value)
        except ValueError:
            raise ValueError(f'{type(self).__name__}: {where}: {what} '
                             f'{value!r} is not an integer.') from None

    def check_image(self, img_path: str, where: str) -> None:
        """Fail early, naming the list line, if a listed image is absent."""
        if not osp.isfile(img_path):
            raise FileNotFoundError(f'{type(self).__name__}: {where}: image '
                                    f'{img_path!r} not found.')

    # -- helpers for the rest of mmcc --------------------------------------
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
