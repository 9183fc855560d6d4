"""Segment feature sets: the study's 311 librosa features (named in docs/method.md's
order) and the musicnn embedding; genreflow.features.sets names and versions them."""

from genreflow.features.names import FEATURE_NAMES, N_FEATURES

__all__ = ["FEATURE_NAMES", "N_FEATURES"]
