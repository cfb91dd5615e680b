"""Random draws that depend on a seed, not on where they happen."""
import random
from contextlib import contextmanager

import numpy as np
import torch


@contextmanager
def seeded_random_state(seed: int):
    """Seed ``random``, ``numpy.random`` and torch for the block, then put
    back the states they had.

    Data transforms draw from these global generators; seeding them per
    sample makes a sample's augmentation a function of its seed alone, not
    of which data-loader worker drew it or how long that worker has lived
    (persistent workers carry their state across epochs; a resumed run
    starts new ones).

    Args:
        seed (int): In ``[0, 2**32)``.
    """
    states = random.getstate(), np.random.get_state(), torch.get_rng_state()
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    try:
        yield
    finally:
        random.setstate(states[0])
        np.random.set_state(states[1])
        torch.set_rng_state(states[2])
