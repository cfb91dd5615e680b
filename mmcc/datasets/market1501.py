from mmcc.registry import DATASETS
from .base_reid_dataset import BaseReIDDataset
from .naming import MARKET_NAME_EXAMPLE, MARKET_NAME_PATTERN


@DATASETS.register_module()
class Market1501(BaseReIDDataset):
    """Market-1501 (Zheng et al., ICCV 2015).

    Layout under ``data_root``::

        bounding_box_train/   train split  (751 ids, 12,936 images)
        query/                query split  (750 ids, 3,368 images)
        bounding_box_test/    gallery split (19,732 files; 15,913 kept)

    Names look like ``0002_c1s1_000451_03.jpg``: identity ``0002``, camera
    ``c1`` (``camid`` 0; six cameras), sequence ``s1``, frame ``000451``,
    detection box ``03``. Identity ``-1`` (written ``-1_c1s1_...``) marks
    junk boxes and is dropped from every split; identity ``0`` marks
    distractors and is kept (they are valid gallery negatives). Only
    ``.jpg`` files are read, so the ``Thumbs.db`` of some copies is ignored.

    Args:
        split (str): ``'train'``, ``'query'`` or ``'gallery'``.
        data_root (str): The folder holding the three split folders.
        **kwargs: See :class:`BaseReIDDataset`.

    Example:
        >>> from mmcc.registry import DATASETS
        >>> query = DATASETS.build(dict(
        ...     type='Market1501', data_root='data/market1501',
        ...     split='query', pipeline=[]))
    """

    METAINFO = dict(dataset_name='Market-1501', num_cameras=6)
    SPLIT_FOLDERS = dict(
        train='bounding_box_train', query='query', gallery='bounding_box_test')
    # One naming for the data set and the synthetic renderer (naming.py).
    FILENAME_PATTERN = MARKET_NAME_PATTERN
    NAME_EXAMPLE = MARKET_NAME_EXAMPLE
