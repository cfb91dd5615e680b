import re

from mmcc.registry import DATASETS
from .base_reid_dataset import BaseReIDDataset


@DATASETS.register_module()
class DukeMTMCReID(BaseReIDDataset):
    """DukeMTMC-reID (Zheng et al., ICCV 2017; Ristani et al., ECCVW 2016).

    Market-1501's layout under ``data_root``::

        bounding_box_train/   train split  (702 ids, 16,522 images)
        query/                query split  (2,228 images)
        bounding_box_test/    gallery split (17,661 images)

    Names look like ``0001_c2_f0046182.jpg``: identity ``0001``, camera
    ``c2`` (``camid`` 1; eight cameras), frame ``f0046182``. Identity ``-1``
    would be junk and is dropped, as for Market-1501 (the release has none).

    Args:
        split (str): ``'train'``, ``'query'`` or ``'gallery'``.
        data_root (str): The folder holding the three split folders.
        **kwargs: See :class:`BaseReIDDataset`.
    """

    METAINFO = dict(dataset_name='DukeMTMC-reID', num_cameras=8)
    SPLIT_FOLDERS = dict(
        train='bounding_box_train', query='query', gallery='bounding_box_test')
    # re.ASCII: \d is 0-9 only, not any Unicode digit.
    FILENAME_PATTERN = re.compile(r'(?P<pid>-1|\d+)_c(?P<cam>\d)_f\d+\.jpg',
                                  re.ASCII)
    NAME_EXAMPLE = '0001_c2_f0046182.jpg'
