import os.path as osp
from typing import List

from mmcc.registry import DATASETS
from .base_reid_dataset import INT64_MAX, BaseReIDDataset


@DATASETS.register_module()
class ReIDListDataset(BaseReIDDataset):
    """Any re-ID split described by a list file.

    Each line of ``ann_file`` is ``<relative path> <identity> <camera>``,
    e.g. ``cam3/person_0042/0007.png 42 2``, with the camera already
    0-based. Paths are relative to ``data_prefix['img_path']`` (itself
    relative to ``data_root``, as usual in mmengine); a path may contain
    spaces since lines are split from the right. Blank lines and lines
    starting with ``#`` are skipped. Identity ``-1`` is junk and dropped;
    other identities (``0`` to int64's maximum) are kept as written. The
    file is UTF-8 (a leading byte order mark is fine). A malformed line -
    not UTF-8, a missing field, a number that is not an integer or out of
    range - is a ``ValueError`` naming ``<ann_file>:<line>``; a listed
    image that does not exist is a ``FileNotFoundError`` naming it too.

    One list file is one split: pass the train, query or gallery list, and
    ``split`` to say which it is (it sets ``is_query``). When
    ``metainfo=dict(num_cameras=N)`` is given, cameras must lie in
    ``[0, N)``.

    Args:
        ann_file (str): The list file, relative to ``data_root`` or
            absolute.
        split (str): ``'train'``, ``'query'`` or ``'gallery'``.
        data_root (str): Root of ``ann_file`` and ``data_prefix``.
            Defaults to ``''``.
        data_prefix (dict): ``dict(img_path=<images folder>)``. Defaults to
            ``dict(img_path='')``, i.e. paths relative to ``data_root``.
        **kwargs: See :class:`BaseReIDDataset`.

    Example:
        >>> dataset = DATASETS.build(dict(
        ...     type='ReIDListDataset', data_root='data/mycams',
        ...     ann_file='meta/query.txt', data_prefix=dict(img_path='img'),
        ...     split='query', pipeline=[]))
    """

    METAINFO = dict(dataset_name='re-ID list', num_cameras=None)

    def __init__(self,
                 ann_file: str,
                 split: str,
                 data_root: str = '',
                 data_prefix: dict = dict(img_path=''),
                 **kwargs):
        if not ann_file:
            raise ValueError('ReIDListDataset: ann_file is required.')
        if not isinstance(split, str):
            raise ValueError('ReIDListDataset: one ann_file holds one split; '
                             f'got split={split!r}. Concatenate one '
                             'ReIDListDataset per split instead.')
        super().__init__(
            split=split,
            data_root=data_root,
            ann_file=ann_file,
            data_prefix=data_prefix,
            **kwargs)

    def load_split(self) -> List[dict]:
        list_file = osp.abspath(self.ann_file)
        img_root = self.data_prefix.get('img_path', '')
        num_cameras = self._metainfo.get('num_cameras')
        infos = []
        for where, (rel_path, label, camera) in self.read_list_file(
                list_file, num_fields=3):
            pid = self.parse_pid(label, where)
            camid = self.parse_int(
                camera,
                'camera',
                where,
                minimum=0,
                valid=f'cameras are 0-based: 0..{INT64_MAX}')
            if num_cameras is not None and camid >= num_cameras:
                raise ValueError(
                    f'ReIDListDataset: {where}: camera {camid} out of range '
                    f'(cameras are 0-based: >= 0, < {num_cameras}).')
            img_path = osp.join(img_root, rel_path)
            self.check_image(img_path, where)
            infos.append(self.make_data_info(img_path, pid, camid))
        return self.drop_junk(infos, source=f'list file {list_file!r}')
