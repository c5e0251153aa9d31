"""End to end in a real headless Chromium: `controlplane serve` starts the API and the
dashboard, a compliance reviewer signs in, opens the production policy, sees its lineage
graph and approvals, downloads the audit bundle, and the bundle verifies offline.

Debian's ``chromium`` (``/usr/bin/chromium``, installed by ``.ci/run``) is driven by Playwright
through ``executable_path``; Playwright never downloads a browser. With
``CONTROLPLANE_SCREENSHOTS_DIR`` set (e.g. ``docs/screenshots``), the screenshots of every page
are kept there.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.cli.helpers import cli_env, invoke
from tests.dashboard.conftest import Scene
from tests.utils.server import free_port

CHROMIUM = Path("/usr/bin/chromium")
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

if not CHROMIUM.exists():
    if os.environ.get("CI"):
        raise RuntimeError("CI needs Debian's chromium at /usr/bin/chromium (.ci/run installs it)")
    pytest.skip("needs Debian's chromium (apt-get install -y chromium)", allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api")


def _wait_for(url: str, process: subprocess.Popen[bytes], what: str, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited with {process.returncode}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{what} did not answer at {url} within {seconds} s")


@pytest.fixture
def served(scene: Scene, tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """``controlplane serve`` on the scene's database: (dashboard URL, its stderr log)."""
    settings = scene.server.cp.settings
    api_port, dashboard_port = free_port(), free_port()
    env = {
        **os.environ,
        "CONTROLPLANE_DATA_DIR": str(settings.data_dir),
        "CONTROLPLANE_DATABASE_URL": settings.resolved_database_url,
        "CONTROLPLANE_PSEUDONYM_SECRET": str(settings.pseudonym_secret),
        "CONTROLPLANE_ORIGIN": str(settings.origin),
        "CONTROLPLANE_PORT": str(api_port),
        "CONTROLPLANE_DASHBOARD_PORT": str(dashboard_port),
        "CONTROLPLANE_MLFLOW_ENABLED": "false",  # the mirror has tests of its own
    }
    env.pop("CONTROLPLANE_TOKEN", None)
    log = tmp_path / "serve.log"
    with log.open("wb") as handle:
        process = subprocess.Popen(
            [sys.executable, "-m", "controlplane.cli.main", "serve"],
            env=env,
            stdout=handle,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        try:
            _wait_for(f"http://127.0.0.1:{api_port}/healthz", process, "the API")
            dashboard = f"http://127.0.0.1:{dashboard_port}"
            _wait_for(f"{dashboard}/_stcore/health", process, "the dashboard")
            yield dashboard, log
        finally:
            process.terminate()
            process.wait(timeout=20)
    # stopping serve stopped the dashboard too
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"{dashboard}/_stcore/health", timeout=2)


@pytest.fixture
def shots(tmp_path: Path) -> Path:
    wanted = os.environ.get("CONTROLPLANE_SCREENSHOTS_DIR")
    directory = Path(wanted) if wanted else tmp_path / "screenshots"
    directory.mkdir(parents=True, exist_ok=True)
    return directory


def test_reviewer_finds_what_is_behind_production_and_verifies_the_bundle(
    scene: Scene, served: tuple[str, Path], shots: Path, tmp_path: Path
) -> None:
    dashboard, log = served
    text = log.read_text()
    assert "controlplane listening on" in text and f"dashboard    {dashboard}" in text, text
    waiting = scene.open_request()  # something in the approvers' queue
    bundle = tmp_path / "bundle.json"

    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=FLAGS)
        page = browser.new_page(viewport={"width": 1400, "height": 2000}, accept_downloads=True)
        page.set_default_timeout(30_000)

        def shot(name: str) -> None:
            page.wait_for_timeout(1000)  # let charts and widgets finish drawing
            page.screenshot(path=str(shots / f"{name}.png"))

        try:
            _walk_through(scene, dashboard, page, shot, waiting, bundle)
        except Exception:
            page.screenshot(path=str(tmp_path / "failure.png"))
            raise
        finally:
            browser.close()

    result = invoke(["verify", "--bundle", bundle], cli_env(None, tmp_path))
    assert result.exit_code == 0, result.stdout + result.stderr
    assert result.stdout.startswith("OK:"), result.stdout


def _walk_through(
    scene: Scene,
    dashboard: str,
    page: Any,
    shot: Callable[[str], None],
    waiting: dict[str, Any],
    bundle: Path,
) -> None:
    """Sign in as the compliance reviewer and answer: what is behind production, is it intact?"""
    policy = scene.policy["ref"]
    page.goto(dashboard)
    page.get_by_label("Token").fill(scene.tokens["carol"])
    shot("login")
    page.get_by_role("button", name="Sign in").click()
    page.get_by_role("heading", name="Overview").wait_for()

    page.get_by_role("button", name="Verify the whole ledger now").click()
    page.get_by_text("Nothing was rewritten").wait_for(timeout=60_000)
    page.get_by_text(f"{policy} · since").wait_for()
    shot("overview")

    page.get_by_role("button", name=f"Open {policy}").click()
    page.get_by_role("heading", name=policy).wait_for()
    graph = page.locator('[data-testid="stGraphVizChart"] svg')
    graph.wait_for()
    svg = graph.inner_html()
    for node in ("dataset/prefs@1", "rubric/helpfulness@1", "reward_model/rm@1", policy):
        assert node in svg, node
    approvals = page.locator('[data-testid="stTable"]').first
    approvals.wait_for()
    table = approvals.inner_text()
    assert "carol" in table and "alice" in table and "verified" in table, table
    assert scene.world.carol.key_id[:16] in table, table
    shot("version")

    page.get_by_role("button", name="↑ dataset/prefs@1 (approved)").click()
    page.get_by_role("heading", name="dataset/prefs@1").wait_for()
    page.get_by_text("prefs-dpo").first.wait_for()

    page.get_by_role("link", name="Approvals").click()
    page.get_by_text(f"Request {waiting['id']}:").wait_for()
    shot("approvals")

    page.get_by_role("link", name="Evaluations").click()
    page.get_by_text("Change from the previous version").wait_for()
    page.locator('[data-testid="stVegaLiteChart"]').first.wait_for()
    shot("evaluations")

    page.get_by_role("link", name="Ledger").click()
    page.get_by_role("heading", name="Ledger", exact=True).wait_for()
    shot("ledger")
    page.get_by_role("button", name="Open entry").click()
    page.get_by_text("inclusion proof", exact=False).first.wait_for()
    page.get_by_text("is in the signed tree of").wait_for()
    shot("entry")

    page.get_by_role("link", name="Audit export").click()
    page.get_by_role("button", name="Prepare the bundle").click()
    page.get_by_text("Bundle checked here before download").wait_for(timeout=60_000)
    with page.expect_download() as download:
        page.get_by_role("button", name="Download the audit bundle").click()
    download.value.save_as(bundle)
    page.get_by_role("button", name="Build the report").click()
    page.get_by_role("heading", name=f"Audit report: {policy}", exact=False).wait_for(
        timeout=60_000
    )
    shot("audit")
