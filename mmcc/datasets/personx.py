import re
from typing import Optional, Sequence

from mmcc.registry import DATASETS
from .base_reid_dataset import BaseReIDDataset


@DATASETS.register_module()
class PersonX(BaseReIDDataset):
    """PersonX, synthetic persons (Sun & Zheng, CVPR 2019).

    Market-1501's layout under ``data_root``::

        bounding_box_train/   train split  (9,840 images)
        query/                query split  (5,136 images)
        bounding_box_test/    gallery split (30,816 images)

    (1,266 identities in all; the counts are those of the released subset
    that unsupervised re-ID papers, Cluster Contrast included, use).

    Names follow Market-1501's scheme, identity then ``c<camera>``, e.g.
    ``0001_c3s1_000001_00.jpg``; whatever follows the camera number is not
    used, because public PersonX loaders only rely on that prefix. Camera
    numbers may have two digits: that subset keeps cameras 3, 4, 8, 10, 11
    and 12 of the PersonX engine, which become ``camid`` 0-5 in that order
    (the mapping the reference uses). The six-background ``PersonX_v1``
    folders number their cameras 1-6: pass ``camera_ids=(1, 2, 3, 4, 5,
    6)`` for those. As for Market-1501, identity ``-1`` is dropped and
    identity ``0`` is kept.

    Args:
        split (str): ``'train'``, ``'query'`` or ``'gallery'``.
        data_root (str): The folder holding the three split folders.
        camera_ids (Sequence[int], optional): Camera numbers in the names,
            in ``camid`` order. Defaults to ``(3, 4, 8, 10, 11, 12)``.
        **kwargs: See :class:`BaseReIDDataset`.
    """

    METAINFO = dict(dataset_name='PersonX', num_cameras=6)
    SPLIT_FOLDERS = dict(
        train='bounding_box_train', query='query', gallery='bounding_box_test')
    # After the camera number: nothing, or a non-digit and anything.
    # re.ASCII: \d is 0-9 only, not any Unicode digit.
    FILENAME_PATTERN = re.compile(
        r'(?P<pid>-1|\d+)_c(?P<cam>\d+)(?:\D.*)?\.jpg', re.ASCII)
    NAME_EXAMPLE = '0001_c3s1_000001_00.jpg'
    DEFAULT_CAMERA_IDS = (3, 4, 8, 10, 11, 12)

    def __init__(self,
                 split: str,
                 data_root: str = '',
                 camera_ids: Optional[Sequence[int]] = DEFAULT_CAMERA_IDS,
                 **kwargs):
        super().__init__(
            split=split, data_root=data_root, camera_ids=camera_ids, **kwargs)
