import os.path as osp
import re
from typing import Dict, List

from mmcc.registry import DATASETS
from .base_reid_dataset import BaseReIDDataset


@DATASETS.register_module()
class MSMT17(BaseReIDDataset):
    """MSMT17 (Wei et al., CVPR 2018), read through its list files.

    Layout under ``data_root`` (V1)::

        train/0000/0000_000_01_0303morning_0015_0.jpg ...
        test/0000/...
        list_train.txt   list_val.txt   (paths relative to train/)
        list_query.txt   list_gallery.txt   (paths relative to test/)

    Every list line is ``<relative path> <identity>``, e.g.
    ``0000/0000_000_01_0303morning_0015_0.jpg 0``; the identity of the line
    becomes ``gt_label`` (train and test identities are separate people who
    both start at 0, which is harmless since splits are never mixed). The
    camera is not listed: it is the third ``_``-separated field of the file
    name. Names read ``<identity>_<index>_<camera>_<day><time of day>_...``:
    in the example, identity ``0000``, its image ``000``, camera ``01``
    (``camid`` 0; fifteen cameras), recorded on 03-03 in the morning; the
    trailing fields are not used.

    The ``train`` split is ``list_train.txt`` + ``list_val.txt`` by default
    (1,041 ids, 32,621 images), as unsupervised re-ID code trains on both;
    ``query`` has 11,659 and ``gallery`` 82,161 images.

    MSMT17_V2 (faces blurred) differs only in its image folders,
    ``mask_train_v2/`` and ``mask_test_v2/``, with the same list files and
    names: pass ``version='V2'``.

    Every listed image is checked to exist, so a wrong ``version`` or a
    partial copy fails at load time, naming the list line.

    Args:
        split (str): ``'train'``, ``'query'`` or ``'gallery'``.
        data_root (str): The folder holding the image folders and lists.
        use_val (bool): Add ``list_val.txt`` to the train split.
            Defaults to True.
        version (str): ``'V1'`` or ``'V2'``. Defaults to ``'V1'``.
        **kwargs: See :class:`BaseReIDDataset`.
    """

    METAINFO = dict(dataset_name='MSMT17', num_cameras=15)
    VERSION_FOLDERS = dict(
        V1=dict(train='train', test='test'),
        V2=dict(train='mask_train_v2', test='mask_test_v2'))
    LIST_FILES = dict(
        train=('list_train.txt', ),
        query=('list_query.txt', ),
        gallery=('list_gallery.txt', ))
    VAL_LIST_FILE = 'list_val.txt'
    # re.ASCII: \d is 0-9 only, not any Unicode digit.
    FILENAME_PATTERN = re.compile(
        r'(?P<pid>\d+)_\d+_(?P<cam>\d+)_[^_]+(?:_[^_]+)*\.jpg', re.ASCII)
    NAME_EXAMPLE = '0000_000_01_0303morning_0015_0.jpg'

    def __init__(self,
                 split: str,
                 data_root: str = '',
                 use_val: bool = True,
                 version: str = 'V1',
                 **kwargs):
        if version not in self.VERSION_FOLDERS:
            raise ValueError(f'MSMT17: unknown version {version!r}; expected '
                             f'one of {tuple(self.VERSION_FOLDERS)}.')
        self.use_val = use_val
        self.version = version
        super().__init__(split=split, data_root=data_root, **kwargs)

    def split_folders(self) -> Dict[str, str]:
        folders = self.VERSION_FOLDERS[self.version]
        return dict(
            train=folders['train'],
            query=folders['test'],
            gallery=folders['test'])

    def _expected_layout(self) -> str:
        folders = self.VERSION_FOLDERS[self.version]
        names = [
            f'{folders["train"]}/', f'{folders["test"]}/', 'list_train.txt',
            self.VAL_LIST_FILE, 'list_query.txt', 'list_gallery.txt'
        ]
        return ', '.join(names) + f' (MSMT17_{self.version})'

    def list_files(self) -> List[str]:
        """Absolute paths of the list files of this split."""
        names = list(self.LIST_FILES[self.split])
        if self.split == 'train' and self.use_val:
            names.append(self.VAL_LIST_FILE)
        root = osp.abspath(self.data_root)
        return [osp.join(root, name) for name in names]

    def load_split(self) -> List[dict]:
        """Read the split's list files in order (train before val)."""
        folder = self._split_folder()
        list_files = self.list_files()
        for list_file in list_files:
            if not osp.isfile(list_file):
                raise FileNotFoundError(
                    f'MSMT17: list file {list_file!r} (split '
                    f'{self.split!r}) not found; expected data_root to '
                    f'contain {self._expected_layout()}.')
        infos = []
        for list_file in list_files:
            for where, (rel_path, label) in self.read_list_file(
                    list_file, num_fields=2):
                pid = self.parse_pid(label, where)
                _, camid = self.parse_filename(
                    osp.basename(rel_path), where=where)
                img_path = osp.join(folder, rel_path)
                self.check_image(img_path, where)
                infos.append(self.make_data_info(img_path, pid, camid))
        return self.drop_junk(
            infos, source='list file(s) ' + ', '.join(map(repr, list_files)))
