"""``controlplane serve`` starts the dashboard beside the API (the browser test runs it for
real); here only what needs no server: its options and the address it prints."""

from __future__ import annotations

from pathlib import Path

from controlplane.cli import server_cmds
from controlplane.config import Settings
from tests.cli.helpers import cli_env, invoke


def test_serve_offers_to_leave_the_dashboard_out_and_to_move_it(tmp_path: Path) -> None:
    result = invoke(["serve", "--help"], cli_env(None, tmp_path))
    assert result.exit_code == 0, result.stdout
    for option in ("--no-dashboard", "--dashboard-port", "CONTROLPLANE_DASHBOARD_PORT"):
        assert option in result.stdout


def test_the_dashboard_address_is_one_a_browser_can_open() -> None:
    assert Settings().dashboard_port == 8601
    wildcard = Settings(host="0.0.0.0", dashboard_port=9001)
    assert server_cmds._dashboard_url(wildcard) == "http://127.0.0.1:9001"
    assert server_cmds._dashboard_url(Settings(host="10.1.2.3")) == "http://10.1.2.3:8601"
    assert server_cmds.DASHBOARD_APP.is_file()
