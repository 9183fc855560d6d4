"""genreflow: keep a librosa-feature music-genre classifier fresh with Airflow."""

__version__ = "0.1.0"
