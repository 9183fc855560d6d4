"""Where new labelled tracks come from: an inbox of ``<genre>/<file>`` audio, Jamendo's
Creative Commons tracks by genre tag, Spotify playlists."""

# The names the DAG's `sources` param offers and genreflow.tasks.ingest.make_sources
# builds; a new source is added here and there (tests check the two agree).
KNOWN_SOURCES = ("inbox", "jamendo", "spotify")
