from .samplers import CameraAwareIdentitySampler, IdentitySampler

__all__ = ['CameraAwareIdentitySampler', 'IdentitySampler']
