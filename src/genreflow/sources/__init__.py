"""Where new labelled tracks come from: an inbox of ``<genre>/<file>`` audio, Jamendo's
Creative Commons tracks by genre tag, Spotify playlists."""
