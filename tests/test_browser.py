"""The Airflow UI as an operator uses it, in headless Chromium against `make airflow`'s script.

Debian's chromium (scripts/install-test-deps.sh) driven by the playwright package (no
browser download): log in, see the weekly schedule in the DAG list, trigger a run with
the form's defaults and watch it succeed, read the validate log (the ROC-AUC line within
the log viewer, no deprecation warnings in any task log), open the Model registry from
the Browse menu, open a plot and come back, roll back with the typed confirmation, try
a clip (a real file's probabilities from a chosen version, as `genreflow predict` gives).
Screenshots go to the test's tmp dir (the path is printed) for a person to look at.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import time
from pathlib import Path
from urllib.parse import quote

import pytest
import requests
from test_e2e_api import DAG_ID, RUN_TIMEOUT, STARTUP_TIMEOUT, standalone

from genreflow import registry
from genreflow.cli import main as genreflow_cli
from genreflow.storage import LocalStore

pytestmark = [pytest.mark.browser, pytest.mark.airflow]

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# No sandbox as root; no background networking: this machine's closed network refuses
# Chromium's own connections (updates, sync, safe browsing) otherwise.
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
UI_TIMEOUT_MS = 120_000  # 2 cores shared with the scheduler, the dag-processor and tasks
PASSWORDS = "simple_auth_manager_passwords.json.generated"
DEPRECATION = re.compile(r"Deprecat\w*Warning")
ROC_AUC = re.compile(r"ROC-AUC ovo\s+\d\.\d{4}")


class Screens:
    """Numbered full-window screenshots under ``folder``."""

    def __init__(self, page, folder: Path):
        self.page, self.folder, self.taken = page, folder, []
        folder.mkdir()

    def shot(self, name: str) -> Path:
        path = self.folder / f"{len(self.taken) + 1:02d}-{name}.png"
        self.page.screenshot(path=path)
        self.taken.append(path)
        return path

    @contextlib.contextmanager
    def on_failure(self):
        """One more shot of whatever the window shows when the test fails."""
        try:
            yield
        except BaseException:
            with contextlib.suppress(Exception):
                self.shot("failure")
            raise


@pytest.fixture
def browser_page(tmp_path):
    """A Chromium page (1400x900) and its screenshots."""
    if not Path(CHROMIUM).is_file():
        missing = f"no chromium at {CHROMIUM} (scripts/install-test-deps.sh installs it)"
        if os.environ.get("CI"):  # .ci/run installed it: a missing browser is a failure
            pytest.fail(missing)
        pytest.skip(missing)
    from playwright import sync_api
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        page.set_default_timeout(UI_TIMEOUT_MS)
        screens = Screens(page, tmp_path / "screenshots")
        try:
            yield page, screens
        finally:
            print(f"screenshots: {screens.folder}")
            browser.close()


def text_right_of(page, locator) -> dict:
    """The text's box and every clipping ancestor's box: the text is fully readable when
    it lies inside each (nothing cut off on the right or hidden off to the left)."""
    return locator.evaluate("""element => {
        const box = element.getBoundingClientRect(), clips = [];
        for (let up = element.parentElement; up; up = up.parentElement) {
            const style = getComputedStyle(up);
            if (['auto', 'scroll', 'hidden', 'clip'].includes(style.overflowX)) {
                const r = up.getBoundingClientRect();
                clips.push({left: r.left, right: r.right});
            }
        }
        return {left: box.left, right: box.right, width: box.width, clips: clips,
                viewport: window.innerWidth};
    }""")


def wait_for_run_state(page, url: str, run_id: str) -> str:
    """Reload the run's page until its header shows a final state; that state."""
    deadline = time.monotonic() + RUN_TIMEOUT * 2
    while time.monotonic() < deadline:
        page.goto(url)
        page.get_by_text("Task Instances").first.wait_for()
        header = page.locator("body").inner_text()
        found = re.search(re.escape(run_id) + r"\s+(Success|Failed|Running|Queued)", header)
        if found and found.group(1) in ("Success", "Failed"):
            return found.group(1)
        time.sleep(10)
    pytest.fail(f"run {run_id} did not end within {RUN_TIMEOUT * 2} s")


def all_task_logs(server, run_id: str) -> dict[str, str]:
    """Every task instance's log of the run (mapped ones by index), as Airflow serves it."""
    run = quote(run_id, safe="")
    tasks = server.api("GET", f"/api/v2/dags/{DAG_ID}/dagRuns/{run}/taskInstances").json()
    logs = {}
    for ti in tasks["task_instances"]:
        if ti["try_number"] < 1:
            continue
        params = {"full_content": "true"}
        if ti["map_index"] >= 0:
            params["map_index"] = ti["map_index"]
        content = server.api(
            "GET", f"/api/v2/dags/{DAG_ID}/dagRuns/{run}/taskInstances/{ti['task_id']}/logs/"
            f"{ti['try_number']}", params=params, headers={"Accept": "application/json"},
        ).json()["content"]
        logs[f"{ti['task_id']}[{ti['map_index']}]"] = "\n".join(
            e.get("event", "") if isinstance(e, dict) else str(e) for e in content)
    return logs


def older_copy(store: LocalStore, version: str) -> str:
    """Publish the run's model again as an older, never promoted version: something to
    roll back to, complete and sha256-checked like any published version."""
    manifest = registry.read_manifest(store, version)
    files = registry.verify_files(store, version, manifest)
    older = "20000101T000000Z-before"
    kept = {k: v for k, v in manifest.items() if k not in ("version", "files", "promoted")}
    registry.publish(store, older, files, {**kept, "gate": {
        "promote": False, "reason": "copy made by the browser test"}}, promote=False)
    return older


def test_operator_runs_reads_and_rolls_back_in_the_airflow_ui(
    standalone_env, tmp_path, browser_page, demo_corpus, capsys
):
    env, home, port = standalone_env
    env = {**env, "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin,viewer:viewer"}
    page, screens = browser_page
    store = LocalStore(tmp_path / "store")
    with standalone(env, home, port) as server, screens.on_failure():
        server.wait_for("the API server to be healthy", server.healthy, STARTUP_TIMEOUT)
        password = server.login()
        server.wait_for(f"{DAG_ID} to be parsed",
                        lambda: server.session.get(f"{server.url}/api/v2/dags/{DAG_ID}").ok,
                        STARTUP_TIMEOUT)

        # Log in as a person does: the UI sends us to its login form first.
        page.goto(f"{server.url}/")
        page.wait_for_url(re.compile(r"/auth/login"))
        page.locator("input[name=username]").fill("admin")
        page.locator("input[name=password]").fill(password)
        screens.shot("login")
        page.locator("button[type=submit]").click()
        page.wait_for_url(lambda url: "/auth/login" not in url)

        # The DAG list shows when the pipeline runs by itself.
        page.goto(f"{server.url}/dags")
        card = page.get_by_text(DAG_ID, exact=True).first
        card.wait_for()
        page.get_by_text(re.compile(r"weekly.*Mon.*03:00", re.IGNORECASE)).first.wait_for()
        screens.shot("dag-list-weekly-schedule")

        # Trigger with the form's defaults only (and its "unpause on trigger").
        page.goto(f"{server.url}/dags/{DAG_ID}")
        page.get_by_role("button", name="Trigger Dag").click()
        dialog = page.get_by_role("dialog")
        dialog.get_by_role("button", name="New tracks").click()  # show a section's defaults
        dialog.get_by_text("Max new tracks").wait_for()
        submit = dialog.get_by_role("button", name="Trigger", exact=True)
        screens.shot("trigger-form-defaults")
        assert submit.is_enabled(), "Trigger is disabled with the form's defaults"
        submit.click()
        dialog.wait_for(state="hidden")
        runs = server.wait_for("the triggered run", lambda: server.api(
            "GET", f"/api/v2/dags/{DAG_ID}/dagRuns").json()["dag_runs"], 60)
        run_id = runs[0]["dag_run_id"]
        assert runs[0]["run_type"] == "manual"
        assert not any((runs[0]["conf"] or {}).get(k) for k in ("inbox", "valid_csv", "store"))
        run_url = f"{server.url}/dags/{DAG_ID}/runs/{quote(run_id, safe='')}"
        state = wait_for_run_state(page, run_url, run_id)
        screens.shot(f"run-{state.lower()}")
        assert state == "Success"

        # The validate log: the metrics readable without scrolling sideways.
        page.goto(f"{run_url}/tasks/validate")
        line = page.get_by_text(re.compile(r"ROC-AUC ovo")).first
        line.wait_for()
        line.scroll_into_view_if_needed()
        screens.shot("validate-log")
        assert ROC_AUC.search(line.inner_text()), line.inner_text()
        box = text_right_of(page, line)
        assert box["width"] > 0 and box["right"] <= box["viewport"], box
        for clip in box["clips"]:
            assert clip["left"] - 1 <= box["left"] and box["right"] <= clip["right"] + 1, box
        assert not DEPRECATION.search(page.locator("body").inner_text())
        logs = all_task_logs(server, run_id)
        assert {"validate[-1]", "train[-1]", "publish[-1]"} <= set(logs), sorted(logs)
        flooded = {task: len(DEPRECATION.findall(text)) for task, text in logs.items()
                   if DEPRECATION.search(text)}
        assert flooded == {}, f"deprecation warning lines per task log: {flooded}"

        # The Model registry, from Airflow's own menu: the run's model is latest.
        version = registry.read_latest(store)["version"]
        older = older_copy(store, version)
        page.goto(f"{server.url}/dags")
        page.get_by_role("button", name="Browse").click()
        page.get_by_role("menuitem", name="Model registry").click()
        frame = page.frame_locator("iframe")
        current = frame.locator("table.versions tr.current")
        current.wait_for()
        assert version in current.inner_text() and "latest" in current.inner_text()
        assert frame.locator("tr").filter(has_text=older).count() == 1
        assert frame.get_by_role("link", name=run_id).first.get_attribute("target") == "_top"
        screens.shot("registry-latest")

        # A plot opens inside the page, and the way back is a click.
        current.get_by_role("link", name="confusion_matrix.png").click()
        frame.locator("img.full").wait_for()
        assert frame.locator("img.full").evaluate("img => img.naturalWidth") > 100
        screens.shot("plot")
        frame.get_by_role("link", name="all versions").click()
        frame.locator("table.versions tr.current").wait_for()
        assert page.get_by_role("button", name="Browse").is_visible()  # still in Airflow
        screens.shot("back-from-plot")

        # Rolling back needs a login allowed to edit the DAG: a viewer may only look.
        rollback = f"{server.url}/genreflow/registry/versions/{older}/rollback"
        assert requests.post(rollback, data={"confirm": older}, timeout=30).status_code == 401
        viewer = requests.Session()
        viewer.headers["Authorization"] = "Bearer " + server.api(
            "POST", "/auth/token", expect=201, json={"username": "viewer", "password": json.loads(
                (home / PASSWORDS).read_text())["viewer"]}).json()["access_token"]
        assert viewer.get(f"{server.url}/genreflow/registry/", timeout=30).status_code == 200
        refused = viewer.post(rollback, data={"confirm": older}, timeout=30)
        assert refused.status_code == 403 and "edit permission" in refused.text
        assert registry.read_latest(store)["version"] == version

        # Roll back to the older copy in the page: a wrong confirmation changes nothing.
        frame.get_by_role("link", name=older).click()
        form = frame.locator("form.rollback")
        form.locator("input[name=confirm]").fill("yes")
        form.get_by_role("button", name="Roll back to this version").click()
        frame.get_by_text(f"type {older} exactly").wait_for()
        assert registry.read_latest(store)["version"] == version
        screens.shot("rollback-refused")
        frame.locator("form.rollback input[name=confirm]").fill(older)
        frame.locator("form.rollback").scroll_into_view_if_needed()
        screens.shot("rollback-confirmation-typed")
        frame.get_by_role("button", name="Roll back to this version").click()
        frame.get_by_text("Rolled back: latest now points at").wait_for()
        screens.shot("rolled-back")
        pointer = registry.read_latest(store)
        assert (pointer["version"], pointer["previous"]) == (older, version)
        frame.get_by_role("link", name="all versions").click()
        assert older in frame.locator("table.versions tr.current").inner_text()
        screens.shot("registry-after-rollback")

        # Try a clip: a real file through the run's model (no longer latest), chosen in
        # the form; the page shows what `genreflow predict --version` says.
        song = sorted(demo_corpus["root"].joinpath("valid-audio").glob("*/*.wav"))[0]
        frame.get_by_role("link", name="Try a clip").click()
        form = frame.locator("form.try")
        form.locator("select[name=version]").select_option(version)
        form.locator("input[name=file]").set_input_files(str(song))
        form.get_by_role("button", name="Classify").click()
        frame.locator("h2.result").wait_for()
        screens.shot("try-a-clip")
        shown = {cells.nth(0).inner_text(): float(cells.nth(1).inner_text()) for cells in (
            row.locator("td") for row in frame.locator("table.probabilities tbody tr").all())}
        cache = tmp_path / "cli-cache"
        os.environ["GENREFLOW_CACHE"] = str(cache)
        try:
            assert genreflow_cli(["predict", str(song), "--store", str(store.root),
                                  "--version", version, "--json"]) == 0
        finally:
            del os.environ["GENREFLOW_CACHE"]
        want = json.loads(capsys.readouterr().out)[0]
        assert shown == want["probabilities"] and len(shown) == 3
        assert frame.locator("h2.result .genre").inner_text() == want["genre"]
        assert f"answered by {version}" in frame.locator("p.sub").last.inner_text()
        frame.get_by_role("link", name="all versions").click()

        # A version's run opens in the whole window, as Airflow's own run page (the
        # iframe is sandboxed: the page moves Airflow's router, it cannot navigate).
        frame.locator("table.versions tr.current").get_by_role("link", name=run_id).click()
        page.wait_for_url(re.compile(re.escape(f"/dags/{DAG_ID}/runs/")), wait_until="commit")
        page.get_by_text("Task Instances").first.wait_for()
        assert page.locator("iframe").count() == 0
        screens.shot("run-from-registry")
    assert len(screens.taken) >= 14
