from .identity_sampler import (CameraAwareIdentitySampler,
                               IdentityBatchSampler, IdentitySampler)

__all__ = [
    'IdentitySampler', 'CameraAwareIdentitySampler', 'IdentityBatchSampler'
]
