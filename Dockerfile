# The Airflow image every genreflow container runs (docker-compose.yaml: `build: .`).
# Pinned to the Airflow and Python versions the project is tested with.
FROM apache/airflow:3.3.2-python3.11

# ffmpeg lets librosa/audioread decode mp3/m4a; libsndfile (wav/flac/ogg) comes bundled
# in the soundfile wheel. apt needs root; everything else runs as the airflow user.
USER root
RUN apt-get update \
    && apt-get install -y --no-install-recommends ffmpeg \
    && apt-get clean \
    && rm -rf /var/lib/apt/lists/* \
    && mkdir -p /opt/genreflow \
    && chown airflow:0 /opt/genreflow
USER airflow

# Dependencies first so code edits do not invalidate this (slow) layer. requirements.txt
# pins apache-airflow==3.3.2 too, so pip keeps the image's Airflow instead of moving it.
COPY --chown=airflow:0 requirements.txt /opt/genreflow/requirements.txt
RUN pip install --no-cache-dir -r /opt/genreflow/requirements.txt
# musicnn's wheel for its pretrained weights only (its declared deps do not exist for 3.11)
COPY --chown=airflow:0 requirements-weights.txt /opt/genreflow/requirements-weights.txt
RUN pip install --no-cache-dir --no-deps -r /opt/genreflow/requirements-weights.txt

# The library itself; --no-deps because requirements.txt already resolved everything.
COPY --chown=airflow:0 pyproject.toml /opt/genreflow/pyproject.toml
COPY --chown=airflow:0 src/ /opt/genreflow/src/
COPY --chown=airflow:0 include/ /opt/genreflow/include/
RUN pip install --no-cache-dir --no-deps /opt/genreflow
# numba kernels compiled once into the image (concurrent first compiles can corrupt the cache)
RUN genreflow warm-cache

# genreflow resolves include/genreflow.toml against this (compose also bind-mounts it).
ENV GENREFLOW_HOME=/opt/genreflow
