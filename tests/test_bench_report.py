"""The benchmark's published numbers: ratios and "added" figures computed from the raw
runs, the README section that is exactly the rendering of the shipped JSON, and the
capture-lag timing of the harness."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from bench import report
from bench.scenarios import Runner, Settings

ROOT = Path(__file__).resolve().parent.parent


def test_ratios_and_added_figures() -> None:
    results = {
        "rps": {
            "direct": {"rps_c16": 40_000.0, "p50_us_c1": 100},
            "nginx": {"rps_c16": 20_000.0, "p50_us_c1": 250},
            "logproxy": {"rps_c16": 1_000.0, "p50_us_c1": 800},
            "broken": {"error": "start failed: boom"},
        }
    }
    table = report.compute(results, ["direct", "nginx", "logproxy", "broken"])
    rate = table["rps.rps_c16"]["logproxy"]
    assert rate == {"value": 1_000.0, "x_direct": 0.025, "x_nginx": 0.05}
    added = table["rps.added:p50_us_c1"]
    assert added["logproxy"]["value"] == 700  # its median minus direct's
    assert added["logproxy"]["x_nginx"] == pytest.approx(700 / 150)
    assert added["logproxy"]["x_direct"] is None  # direct adds nothing: no ratio
    assert "broken" not in rate and "broken" not in table["rps.rps_c16"]


def test_the_readme_shows_the_shipped_results() -> None:
    """README's Performance table is the rendering of docs/performance.json, not edited."""
    data = json.loads((ROOT / "docs" / "performance.json").read_text())
    readme = (ROOT / "README.md").read_text()
    published = readme[readme.index(report.BEGIN) + len(report.BEGIN) : readme.index(report.END)]
    assert published.strip() == report.markdown(data).strip()


def test_update_readme_replaces_only_the_marked_part(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{report.BEGIN}\nold table\n{report.END}\noutro\n")
    report.update_readme(readme, "new table\n")
    assert readme.read_text() == f"intro\n{report.BEGIN}\nnew table\n{report.END}\noutro\n"
    readme.write_text("no markers\n")
    with pytest.raises(SystemExit, match="markers"):
        report.update_readme(readme, "x")
    assert readme.read_text() == "no markers\n"


class GrowingCapture:
    """A capture directory that grows for ``seconds`` and then stays put."""

    captures = True

    def __init__(self, seconds: float) -> None:
        self.until = time.monotonic() + seconds

    def capture_stats(self) -> tuple[int, int]:
        now = time.monotonic()
        grown = int(min(now, self.until) * 1000)
        time.sleep(0.05)  # walking a big capture directory takes time too
        return grown, grown


def test_capture_lag_ends_when_the_capture_stops_changing() -> None:
    nowhere = Path("/nonexistent")
    runner = Runner(Settings.make(quick=True), {}, nowhere, nowhere, print)
    proxy: Any = GrowingCapture(0.3)
    t0 = time.monotonic()
    size, settled_at = runner._settle(proxy, 10.0)
    done = time.monotonic()
    assert size == int(proxy.until * 1000)
    assert 0.3 <= settled_at - t0 < 1.0  # when it stopped growing, give or take a look
    assert done - settled_at >= 0.3  # the stability wait is not counted
