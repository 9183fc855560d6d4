"""Types, beyond skops' built-in safe set, that a published model may contain.

Loading refuses any model holding a type outside this list, so a tampered or foreign
model file cannot run code on the machine that pulls it. It is exactly what the
pipelines of genreflow.model.candidates() hold (tests/test_model.py checks it):
extend it only with classes this project itself puts into the pipeline.
"""

TRUSTED_TYPES: tuple[str, ...] = (
    "genreflow.cluster.ClusterFeature",
    "genreflow.compression.PowerToDb",
    "genreflow.generation.FeatureGenerator",
    "genreflow.selector.FeatureSetSelector",
    "imblearn.over_sampling._smote.base.SMOTE",
    "imblearn.pipeline.Pipeline",
)
