from .feature_extraction import extract_features

__all__ = ['extract_features']
