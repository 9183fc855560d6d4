"""The 311 segment features of the study, named and in METHOD.md's order."""

from genreflow.features.names import FEATURE_NAMES, N_FEATURES

__all__ = ["FEATURE_NAMES", "N_FEATURES"]
