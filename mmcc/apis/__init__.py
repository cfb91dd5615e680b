"""The user-facing API. Feature extraction lives in :mod:`mmcc.engine`, so
that the pseudo-label hook needs nothing from here."""
from mmcc.engine.feature_extraction import extract_features
from .inference import embed_images, init_model

__all__ = ['extract_features', 'init_model', 'embed_images']
