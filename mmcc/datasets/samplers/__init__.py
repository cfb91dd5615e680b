from .identity_sampler import CameraAwareIdentitySampler, IdentitySampler

__all__ = ['IdentitySampler', 'CameraAwareIdentitySampler']
