"""The model registry page over HTTP (FastAPI test client) against a real local store."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from genreflow import registry
from genreflow.registry_view import create_app
from genreflow.storage import LocalStore

PNG = b"\x89PNG\r\n\x1a\n-tiny-confusion-matrix"


def manifest(auc: float, accuracy: float, promote: bool, reason: str) -> dict:
    return {
        "created_at": "2026-11-25T10:00:00+00:00", "run_id": f"manual__{auc}",
        "n_training_tracks": 9,
        "metrics": {"roc_auc_ovo": auc, "song_accuracy": accuracy},
        "gate": {"promote": promote, "reason": reason},
    }


@pytest.fixture
def store(tmp_path) -> LocalStore:
    """Two published versions: the old champion and a refused, newer challenger."""
    store = LocalStore(tmp_path / "store")
    registry.publish(
        store, "20261124T030000Z-aaaaaa",
        {registry.MODEL_FILE: b"model-1", "confusion_matrix.png": PNG},
        manifest(0.9312, 0.8333, True, "first model: no champion yet"), promote=True,
    )
    registry.publish(
        store, "20261125T030000Z-bbbbbb", {registry.MODEL_FILE: b"model-2"},
        manifest(0.5021, 0.3333, False, "challenger ROC-AUC 0.5021 is worse than champion"),
        promote=False,
    )
    return store


@pytest.fixture
def client(store) -> TestClient:
    return TestClient(create_app(store.uri))


def test_page_lists_versions_with_metrics_gate_and_latest(client):
    response = client.get("/")
    assert response.status_code == 200
    page = response.text
    old, new = page.index("20261124T030000Z-aaaaaa"), page.index("20261125T030000Z-bbbbbb")
    assert new < old  # newest first
    assert page.count('class="latest"') == 1
    assert page.index('class="latest"') > old  # the mark is on the champion's row
    for text in ("0.9312", "0.8333", "0.5021", "first model: no champion yet",
                 "is worse than champion", "refuse", "promote"):
        assert text in page
    assert 'href="/versions/20261124T030000Z-aaaaaa/files/confusion_matrix.png"' in page


def test_json_rows(client):
    rows = client.get("/api/versions").json()
    assert [(r["version"], r["latest"], r["promoted"]) for r in rows] == [
        ("20261125T030000Z-bbbbbb", False, False),
        ("20261124T030000Z-aaaaaa", True, True),
    ]
    assert rows[1]["plots"] == ["confusion_matrix.png"]
    assert rows[1]["roc_auc_ovo"] == pytest.approx(0.9312)


def test_plot_is_served_only_when_listed_and_intact(client, store):
    url = "/versions/20261124T030000Z-aaaaaa/files/confusion_matrix.png"
    response = client.get(url)
    assert (response.status_code, response.headers["content-type"]) == (200, "image/png")
    assert response.content == PNG
    assert client.get("/versions/20261124T030000Z-aaaaaa/files/model.skops").status_code == 404
    assert client.get("/versions/19990101T000000Z-000000/files/a.png").status_code == 404
    store.write_bytes(registry.version_key("20261124T030000Z-aaaaaa", "confusion_matrix.png"),
                      b"tampered")
    assert client.get(url).status_code == 409


def test_unreadable_manifest_is_shown_and_empty_store(tmp_path, store):
    store.write_bytes(registry.version_key("20261126T030000Z-cccccc", "manifest.json"), b"{")
    rows = TestClient(create_app(store.uri)).get("/api/versions").json()
    assert rows[0]["version"] == "20261126T030000Z-cccccc"
    assert "not valid JSON" in rows[0]["error"]
    empty = TestClient(create_app(str(tmp_path / "empty"))).get("/")
    assert empty.status_code == 200 and "no model published yet" in empty.text


def test_store_from_env(monkeypatch, store, genres_config):
    monkeypatch.setenv("GENREFLOW_STORE", store.uri)
    monkeypatch.setenv("GENREFLOW_CONFIG", str(genres_config))
    assert len(TestClient(create_app()).get("/api/versions").json()) == 2
