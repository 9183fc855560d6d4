"""Train only on what you can vouch for (issue 19): a file deleted from the inbox leaves
training, a file caught mid-upload is not ingested truncated, a version lists what it was
trained on, validation songs in the training data are reported."""

from __future__ import annotations

import logging

from test_ingest import inbox_settings, run

from genreflow import catalog
from genreflow.storage import LocalStore


def statuses(settings) -> dict[str, str]:
    return catalog.read_catalog(LocalStore(settings.store)).set_index("source_id")[
        "status"].to_dict()


def test_a_file_deleted_from_the_inbox_leaves_training(tmp_path, short_clips, caplog):
    metal = short_clips["metal_000.wav"].read_bytes()
    settings = inbox_settings(tmp_path, short_clips, {"metal/zz_copy.wav": metal})
    first = run(settings, "r1")
    assert first["n_tracks"] == 3 and statuses(settings)["metal/zz_copy.wav"] == "duplicate"
    caplog.set_level(logging.INFO, logger="genreflow")

    LocalStore(settings.inbox).delete("classical/classical_001.wav")  # wrongly labelled
    second = run(settings, "r2")
    assert statuses(settings)["classical/classical_001.wav"] == catalog.REMOVED
    assert second["n_tracks"] == 2 and second["fingerprint"] != first["fingerprint"]
    assert "removed inbox:classical/classical_001.wav: no longer at its source" in caplog.text

    # the trained key of an audio goes, its copy under the same genre trains instead
    LocalStore(settings.inbox).delete("metal/metal_000.wav")
    third = run(settings, "r3")
    assert statuses(settings) == {
        "classical/classical_000.wav": "ok", "classical/classical_001.wav": "removed",
        "metal/metal_000.wav": "removed", "metal/zz_copy.wav": "ok"}
    assert third["n_tracks"] == 2 and third["new_tracks"] == 0
