"""genre_retrain through Airflow with only the Jamendo source, against the local fake
Jamendo: the published model is trained on tracks that came from nowhere else, its
licences can be listed for attribution, and a second run fetches nothing."""

from __future__ import annotations

import json

from jamendo_api import CLIENT_ID, FakeJamendo

from genreflow import attribution, catalog, registry
from genreflow.cli import main as genreflow
from genreflow.storage import LocalStore

# fake track id -> demo clip (tests/fixtures/jamendo/tracks.json; conftest.demo_corpus)
SERVED = {
    "1900001": "classical/classical_000.wav", "1900002": "classical/classical_001.wav",
    "1900005": "classical/classical_002.wav", "1900011": "metal/metal_000.wav",
    "1900012": "metal/metal_001.wav", "1900014": "metal/metal_002.wav",
    "1900021": "electronic/electronic_000.wav", "1900022": "electronic/electronic_001.wav",
    "1900023": "electronic/electronic_002.wav",
}  # 1900024's audio is not served (404); 1900003 is by-nc-nd, excluded below

CONFIG = """
genres = ["classical", "metal", "electronic"]
[jamendo]
exclude_licence_terms = ["nd"]
[jamendo.tags]
classical = ["classical"]
metal = ["metal", "heavymetal"]
electronic = ["electronic"]
"""


def test_run_publishes_a_model_trained_only_on_jamendo_tracks(run_dag, demo_corpus, tmp_path,
                                                               capsys):
    config = tmp_path / "genreflow.toml"
    config.write_text(CONFIG)
    with FakeJamendo() as fake:
        for track_id, clip in SERVED.items():
            fake.audio[track_id] = (demo_corpus["inbox"] / clip).read_bytes()
        env = {
            "GENREFLOW_CONFIG": str(config),
            "GENREFLOW_STORE": str(tmp_path / "store"),
            "GENREFLOW_INBOX": str(tmp_path / "no-inbox"),  # not a source of this run
            "GENREFLOW_VALID_CSV": str(demo_corpus["valid_csv"]),
            "GENREFLOW_JAMENDO_API_URL": fake.api_url,
            "JAMENDO_CLIENT_ID": CLIENT_ID,
        }
        run = run_dag(env, conf={"sources": ["jamendo"]})
        downloads = sorted(r.path for r in fake.downloads())
        again = run_dag(env, conf={"sources": ["jamendo"]}) if run.returncode == 0 else run
        downloads_again = len(fake.downloads())

    assert run.returncode == 0, run.log[-3000:]
    assert run.state == "success"
    assert downloads == sorted(f"/download/track/{t}/mp32/" for t in [*SERVED, "1900024"])
    # the second run lists Jamendo again, finds nothing new, downloads nothing, trains nothing
    assert again.returncode == 0, again.log[-3000:]
    assert downloads_again == len(downloads)
    assert "0 new" in again.log and "no new data" in again.log

    store = LocalStore(tmp_path / "store")
    version = registry.read_latest(store)["version"]
    manifest = registry.read_manifest(store, version)
    assert manifest["n_training_tracks"] == 9
    assert set(manifest["genres"]) == {"classical", "metal", "electronic"}
    table = catalog.read_catalog(store)
    ok = table[table["status"] == catalog.OK]
    assert set(ok["source"]) == {"jamendo"} and len(ok) == 9
    assert set(table["source"]) == {"jamendo"}
    statuses = table.set_index("key")["status"]
    assert statuses["jamendo:1900024"] == catalog.FAILED
    assert statuses["jamendo:1900003"] == statuses["jamendo:1900013"] == catalog.REJECTED

    listed_version, rows = attribution.trained_on(store, version)
    assert listed_version == version
    assert sorted(r["key"] for r in rows) == sorted(f"jamendo:{t}" for t in SERVED)
    assert all(r["licence_url"].startswith("http://creativecommons.org/licenses/") and
               r["source_url"].startswith("https://www.jamendo.com/track/") for r in rows)

    assert genreflow(["licences", "--store", str(store.root), "--version", version]) == 0
    out = capsys.readouterr().out
    assert f"model {version}: trained on 9 tracks" in out
    assert "      4  CC BY 3.0" in out
    assert "Elena Varga - Nocturne for Quiet Rooms" in out
    assert "licence: http://creativecommons.org/licenses/by-sa/3.0/" in out
    assert genreflow(["licences", "--store", str(store.root), "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert listed["version"] == version and len(listed["tracks"]) == 9
