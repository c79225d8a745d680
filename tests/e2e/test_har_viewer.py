"""The HAR export opens in a real HAR consumer: Chromium (via Playwright's routeFromHAR)
replays the exported responses for the exported requests."""

from __future__ import annotations

import json
from pathlib import Path

import openai
import pytest
from playwright import sync_api
from support import chromium

from logproxy.cli import main as cli

from .conftest import Logproxy

pytestmark = pytest.mark.e2e

BROWSER_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def test_exported_har_replays_in_chromium(
    tmp_path: Path, proxy: Logproxy, oai: openai.OpenAI, capsys: pytest.CaptureFixture[str]
) -> None:
    browser_path = chromium()
    raw = oai.chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "har please"}]
    )
    capture_id = raw.headers["x-logproxy-id"]
    proxy.capture(capture_id)  # finished on disk
    har_path = tmp_path / "traffic.har"
    assert (
        cli(
            [
                "export",
                "--format",
                "har",
                "--log-dir",
                str(proxy.log_dir),
                "-o",
                str(har_path),
                "-q",
            ]
        )
        == 0
    )
    har = json.loads(har_path.read_text())
    entry = next(e for e in har["log"]["entries"] if capture_id in json.dumps(e))
    url, body = entry["request"]["url"], entry["request"]["postData"]["text"]
    expected = entry["response"]["content"]["text"]

    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=browser_path, args=BROWSER_ARGS)
        try:
            context = browser.new_context()
            context.route_from_har(str(har_path), not_found="abort")
            page = context.new_page()
            page.set_content("<title>har</title>")
            replayed = page.evaluate(
                """async ([url, body]) => {
                    const r = await fetch(url, {method: "POST", body,
                        headers: {"Content-Type": "application/json"}});
                    return {status: r.status, text: await r.text()};
                }""",
                [url, body],
            )
        finally:
            browser.close()
    assert replayed["status"] == 200
    assert json.loads(replayed["text"]) == json.loads(expected)
    assert json.loads(expected)["choices"][0]["message"]["content"]
