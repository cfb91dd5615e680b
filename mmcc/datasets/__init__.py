from .base_reid_dataset import BaseReIDDataset
from .dukemtmc_reid import DukeMTMCReID
from .market1501 import Market1501
from .msmt17 import MSMT17
from .personx import PersonX
from .reid_list_dataset import ReIDListDataset
from .samplers import (CameraAwareIdentitySampler, IdentityBatchSampler,
                       IdentitySampler)
from .transforms import NormalizedRandomErasing
from .veri776 import VeRi776

__all__ = [
    'BaseReIDDataset', 'DukeMTMCReID', 'Market1501', 'MSMT17', 'PersonX',
    'ReIDListDataset', 'VeRi776', 'CameraAwareIdentitySampler',
    'IdentitySampler', 'IdentityBatchSampler', 'NormalizedRandomErasing'
]
