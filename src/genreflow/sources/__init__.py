"""Where new labelled tracks come from: an inbox of ``<genre>/<file>`` audio, Spotify."""
