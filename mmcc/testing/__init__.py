"""Helpers for tests, demos and benchmarks: data made here, not downloaded.

Not imported by ``import mmcc``.
"""
from .synthetic import (GENERATOR_VERSION, META_FILE, SPLIT_DIRS,
                        generate_synthetic_reid, render_image, sample_camera,
                        sample_identity)

__all__ = [
    'GENERATOR_VERSION', 'META_FILE', 'SPLIT_DIRS', 'generate_synthetic_reid',
    'render_image', 'sample_camera', 'sample_identity'
]
