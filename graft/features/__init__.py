"""Bottleneck features: a frozen backbone's outputs, computed once per image instead of once per epoch."""

from graft.features.cache import FeatureCache, cached_features

__all__ = ["FeatureCache", "cached_features"]
