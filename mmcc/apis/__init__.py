"""The user-facing API. Feature extraction lives in :mod:`mmcc.engine`, so
that the pseudo-label hook needs nothing from here."""
from mmcc.engine.feature_extraction import extract_features

__all__ = ['extract_features']
