import re

from mmcc.registry import DATASETS
from .base_reid_dataset import BaseReIDDataset


@DATASETS.register_module()
class VeRi776(BaseReIDDataset):
    """VeRi-776, vehicle re-ID (Liu et al., ICME 2016 / ECCV 2016).

    Layout under ``data_root``::

        image_train/   train split  (576 ids, 37,778 images)
        image_query/   query split  (1,678 images)
        image_test/    gallery split (11,579 images)

    Names look like ``0001_c001_00016450_0.jpg``: vehicle ``0001``, camera
    ``c001`` (``camid`` 0; twenty cameras), then a frame/time stamp and an
    index that mmcc does not use. The other files of the release (name
    lists, XML labels) sit beside the folders and are not read.

    Args:
        split (str): ``'train'``, ``'query'`` or ``'gallery'``.
        data_root (str): The folder holding the three image folders.
        **kwargs: See :class:`BaseReIDDataset`.
    """

    METAINFO = dict(dataset_name='VeRi-776', num_cameras=20)
    SPLIT_FOLDERS = dict(
        train='image_train', query='image_query', gallery='image_test')
    # re.ASCII: \d is 0-9 only, not any Unicode digit.
    FILENAME_PATTERN = re.compile(
        r'(?P<pid>-1|\d+)_c(?P<cam>\d+)_\d+_\d+\.jpg', re.ASCII)
    NAME_EXAMPLE = '0001_c001_00016450_0.jpg'
