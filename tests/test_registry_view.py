"""The model registry page over HTTP (FastAPI test client) against a real local store."""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient

from genreflow import registry
from genreflow.cli import main as cli_main
from genreflow.registry_view import create_app
from genreflow.storage import LocalStore

PNG = b"\x89PNG\r\n\x1a\n-tiny-confusion-matrix"
OLD, NEW = "20261124T030000Z-aaaaaa", "20261125T030000Z-bbbbbb"
PLOT = "confusion_matrix.png"
LABELS = ["classical", "metal"]
PER_GENRE = {
    "classical": {"precision": 1.0, "recall": 0.5, "f1-score": 0.6667, "support": 2},
    "metal": {"precision": 0.6667, "recall": 1.0, "f1-score": 0.8, "support": 2},
    "accuracy": 0.75,
    "macro avg": {"precision": 0.8333, "recall": 0.75, "f1-score": 0.7333, "support": 4},
    "weighted avg": {"precision": 0.8333, "recall": 0.75, "f1-score": 0.7333, "support": 4},
}


def manifest(auc: float, accuracy: float, promote: bool, reason: str) -> dict:
    return {
        "created_at": "2026-11-25T10:00:00+00:00", "run_id": f"manual__2026-11-25T10:00:{auc}",
        "n_training_tracks": 9, "n_training_segments": 27,
        "model_name": "extra_trees",
        "model_config": {"steps": {"classifier": "ExtraTreesClassifier(n_estimators=300)"},
                         "selection": {"chosen": 1, "rule": "best mean", "candidates": [
                             {"name": "logreg", "roc_auc_ovo": 0.8011, "fit_seconds": 0.5},
                             {"name": "extra_trees", "roc_auc_ovo": 0.8811}]}},
        "cv_roc_auc_ovo": 0.8811, "cv_roc_auc_ovo_std": 0.0123,
        "metrics": {"roc_auc_ovo": auc, "song_accuracy": accuracy, "song_macro_f1": 0.7333,
                    "n_songs": 4, "n_segments": 12,
                    "confusion_matrix": {"labels": LABELS, "songs": [[1, 1], [0, 2]]}},
        "gate": {"promote": promote, "reason": reason, "champion": None},
    }


def fitted_model() -> bytes:
    """A fitted classifier: rollback loads the target's model before moving latest."""
    from sklearn.linear_model import LogisticRegression

    return registry.dump_model(LogisticRegression().fit([[0.0], [1.0]], LABELS[:2]))


def files(model: bytes, plot: bool) -> dict[str, bytes]:
    metrics = registry.json_bytes({"per_genre": PER_GENRE})
    return {registry.MODEL_FILE: model, registry.METRICS_FILE: metrics,
            **({PLOT: PNG} if plot else {})}


@pytest.fixture
def store(tmp_path) -> LocalStore:
    """Two published versions: the old champion and a refused, newer challenger."""
    store = LocalStore(tmp_path / "store")
    registry.publish(store, OLD, files(b"model-1", plot=True),
                     manifest(0.9312, 0.8333, True, "first model: no champion yet"),
                     promote=True)
    registry.publish(store, NEW, files(fitted_model(), plot=False),  # rolled back to
                     manifest(0.5021, 0.3333, False,
                              "challenger ROC-AUC 0.5021 is <worse> than champion"),
                     promote=False)
    return store


def operator() -> str:
    return "ops-admin"


@pytest.fixture
def client(store) -> TestClient:
    return TestClient(create_app(store.uri, rollback_guard=operator,
                                 run_url=lambda run_id: f"/dags/genre_retrain/runs/{run_id}"))


def test_page_lists_versions_with_metrics_gate_links_and_latest(client):
    response = client.get("/")
    assert response.status_code == 200
    page = response.text
    old, new = page.index(OLD), page.index(NEW)
    assert new < old  # newest first
    assert page.count('class="latest"') == 1
    assert page.index('class="latest"') > old  # the mark is on the champion's row
    for text in ("0.9312", "0.8333", "0.5021", "0.7333", "extra_trees", "0.8811",
                 "first model: no champion yet", "refuse", "promote"):
        assert text in page
    assert "is &lt;worse&gt; than" in page and "<worse>" not in page  # autoescaped
    assert f'href="/versions/{OLD}/plots/{PLOT}"' in page
    assert f'href="/versions/{OLD}"' in page
    # The run opens in the whole Airflow window, not inside the page's iframe.
    run = "/dags/genre_retrain/runs/manual__2026-11-25T10:00:0.9312"
    assert f'href="{run}" target="_top" data-airflow-route' in page


def test_cli_models_and_page_list_the_same_rows_in_the_same_order(client, store, capsys):
    assert cli_main(["models", "--store", store.uri, "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == client.get("/api/versions").json()
    assert cli_main(["models", "--store", store.uri]) == 0
    out = capsys.readouterr().out
    assert out.index(NEW) < out.index(OLD)
    assert "macro-F1 0.7333" in out and "gate: refuse: challenger ROC-AUC 0.5021" in out


def test_version_page_shows_per_genre_classifier_gate_and_plots(client):
    page = client.get(f"/versions/{OLD}").text
    assert 'href="/"' in page  # back to the list
    chosen = page.index("<b>extra_trees</b> (chosen)")
    assert page.index("logreg") < chosen and "0.8011" in page and "rule: best mean" in page
    for text in ("extra_trees", "0.8811", "0.0123",
                 "classifier=ExtraTreesClassifier(n_estimators=300)",
                 "first model: no champion yet", "song macro-F1 0.7333", "4 songs"):
        assert text in page
    per_genre = page[page.index("Per genre"):page.index("Confusion matrix")]
    assert [g for g in ("classical", "metal", "macro avg", "weighted avg") if g in per_genre] \
        == ["classical", "metal", "macro avg"]
    assert "0.6667" in per_genre and "0.5000" in per_genre
    assert f'<img src="/versions/{OLD}/files/{PLOT}"' in page
    assert "This version is latest" in page and "<form" not in page
    assert 'name="confirm"' in client.get(f"/versions/{NEW}").text
    assert client.get("/versions/19990101T000000Z-000000").status_code == 404
    assert client.get("/versions/..%2Fx").status_code == 404


def test_plot_page_has_its_way_back(client):
    page = client.get(f"/versions/{OLD}/plots/{PLOT}").text
    assert f'<img class="full" src="/versions/{OLD}/files/{PLOT}"' in page
    assert f'href="/versions/{OLD}"' in page and 'href="/"' in page
    assert client.get(f"/versions/{OLD}/plots/model.skops").status_code == 404
    assert client.get(f"/versions/{NEW}/plots/{PLOT}").status_code == 404  # not listed


def test_plot_is_served_only_when_listed_and_intact(client, store):
    url = f"/versions/{OLD}/files/{PLOT}"
    response = client.get(url)
    assert (response.status_code, response.headers["content-type"]) == (200, "image/png")
    assert response.content == PNG
    assert client.get(f"/versions/{OLD}/files/model.skops").status_code == 404
    assert client.get("/versions/19990101T000000Z-000000/files/a.png").status_code == 404
    store.write_bytes(registry.version_key(OLD, PLOT), b"tampered")
    assert client.get(url).status_code == 409


def test_rollback_needs_the_typed_version_then_moves_latest(client, store, caplog):
    url = f"/versions/{NEW}/rollback"
    for typed in ("", "yes", OLD):
        response = client.post(url, data={"confirm": typed})
        assert response.status_code == 400 and f"type {NEW} exactly" in response.text
    assert registry.read_latest(store)["version"] == OLD

    response = client.post(url, data={"confirm": f" {NEW} "}, follow_redirects=False)
    assert response.status_code == 303
    assert response.headers["location"] == f"/versions/{NEW}?done=rollback"
    pointer = registry.read_latest(store)
    assert (pointer["version"], pointer["previous"]) == (NEW, OLD)
    assert "rollback by ops-admin" in caplog.text
    page = client.get(response.headers["location"]).text
    assert "Rolled back: latest now points at" in page and "This version is latest" in page


def test_rollback_is_refused_without_a_guard_cross_site_or_to_a_tampered_version(store):
    assert TestClient(create_app(store.uri)).post(
        f"/versions/{NEW}/rollback", data={"confirm": NEW}).status_code == 403
    client = TestClient(create_app(store.uri, rollback_guard=operator))
    assert client.post(f"/versions/{NEW}/rollback", data={"confirm": NEW},
                       headers={"Sec-Fetch-Site": "cross-site"}).status_code == 403
    store.write_bytes(registry.version_key(NEW, registry.MODEL_FILE), b"tampered")
    response = client.post(f"/versions/{NEW}/rollback", data={"confirm": NEW})
    assert response.status_code == 409 and "TamperedFile" in response.text
    assert registry.read_latest(store)["version"] == OLD


def test_unreadable_manifest_is_shown_and_empty_store(tmp_path, store):
    broken = "20261126T030000Z-cccccc"
    store.write_bytes(registry.version_key(broken, "manifest.json"), b"{")
    client = TestClient(create_app(store.uri, rollback_guard=operator))
    rows = client.get("/api/versions").json()
    assert rows[0]["version"] == broken
    assert "not valid JSON" in rows[0]["error"]
    page = client.get(f"/versions/{broken}").text
    assert "not valid JSON" in page and "<form" not in page
    assert client.post(f"/versions/{broken}/rollback",
                       data={"confirm": broken}).status_code == 409
    empty = TestClient(create_app(str(tmp_path / "empty"))).get("/")
    assert empty.status_code == 200 and "no model published yet" in empty.text


def test_store_from_env(monkeypatch, store, genres_config):
    monkeypatch.setenv("GENREFLOW_STORE", store.uri)
    monkeypatch.setenv("GENREFLOW_CONFIG", str(genres_config))
    assert len(TestClient(create_app()).get("/api/versions").json()) == 2
