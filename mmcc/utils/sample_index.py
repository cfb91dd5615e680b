"""Which dataset sample a data sample is."""


def sample_index(sample) -> int:
    """The dataset index (``sample_idx``) a data sample carries.

    Pseudo-labels and embeddings are looked up by it. mmengine data
    elements carry it as metainfo (``PackInputs(meta_keys=(...,
    'sample_idx'))``), plain dicts as a key.

    Raises:
        KeyError: the sample has no ``sample_idx``.
    """
    if isinstance(sample, dict):
        idx = sample.get('sample_idx')
    else:
        idx = getattr(sample, 'sample_idx', None)
        if idx is None and hasattr(sample, 'metainfo'):
            idx = sample.metainfo.get('sample_idx')
    if idx is None:
        raise KeyError('data samples must carry `sample_idx` (keep it in '
                       'PackInputs meta_keys): pseudo-labels and embeddings '
                       'are looked up by dataset index')
    return int(idx)
