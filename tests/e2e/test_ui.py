"""The web UI of the logging Site, in a real browser (Playwright driving Debian's Chromium).

One ``twistd logproxy`` (proxy + logging Site) and the mock upstream serve the module;
requests go through the proxy with plain ``http.client`` (in a thread when the test must
watch the page meanwhile). Every wait is an auto-waiting ``expect``; screenshots of each
major state go to ``test-artifacts/screenshots/``.
"""

from __future__ import annotations

import json
import re
import subprocess
import uuid
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from http.client import HTTPConnection
from pathlib import Path
from typing import Any
from urllib.request import urlopen

import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright
from support import chromium

from logproxy.mockllm import expected_text

from .conftest import (
    OPENAI_KEY,
    REPO,
    Logproxy,
    Mock,
    free_port,
    proxy_config,
    start_logproxy,
    wait_for,
)

pytestmark = pytest.mark.e2e

SCREENSHOTS = REPO / "test-artifacts" / "screenshots"
BROWSER_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
TIMEOUT = 10_000  # ms, for every expect()
expect.set_options(timeout=TIMEOUT)


# --------------------------------------------------------------------------- fixtures


def start_ui_proxy(workdir: Path, mock: Mock, token: str = "") -> Logproxy:
    """A proxy with its logging Site on a free port (``port: 0`` disables it); a lost race
    for the port is retried."""
    routes = {
        "mock": {"pattern": "/mock/", "destination": f"{mock.origin}/v1/"},
        "anthropic": {"pattern": "/anthropic/", "destination": f"{mock.origin}/"},
    }
    for attempt in range(3):
        config = proxy_config(
            workdir / "logs",
            routes,
            logging={"console": False},
            logging_server={"port": free_port(), "token": token},
        )
        try:
            return start_logproxy(workdir, config)
        except pytest.fail.Exception:
            if attempt == 2 or "cannot listen" not in (workdir / "proxy.log").read_text():
                raise
    raise AssertionError("unreachable")


@pytest.fixture(scope="module")
def lp(tmp_path_factory: pytest.TempPathFactory, mock: Mock) -> Iterator[Logproxy]:
    proc = start_ui_proxy(tmp_path_factory.mktemp("ui"), mock)
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    path = chromium()
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=path, args=BROWSER_ARGS)
        yield b
        b.close()


@pytest.fixture
def page(browser: Browser, request: pytest.FixtureRequest) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    pg = context.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    yield pg
    shot(pg, request.node.name)
    context.close()
    assert not errors, f"JavaScript errors on the page: {errors}"


@pytest.fixture(scope="module")
def pool() -> Iterator[ThreadPoolExecutor]:
    with ThreadPoolExecutor(4) as executor:
        yield executor


def shot(page: Page, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.evaluate("window.scrollTo(0, 0)")  # the sticky header at the top of a full-page shot
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)


# --------------------------------------------------------------------------- traffic


def post(lp: Logproxy, path: str, body: dict[str, Any], **headers: str) -> tuple[str, Any]:
    """POST JSON through the proxy: ``(capture id, decoded answer)`` (SSE: the raw text)."""
    conn = HTTPConnection("localhost", lp.port, timeout=30)
    try:
        conn.request(
            "POST",
            path,
            json.dumps(body),
            {
                "Content-Type": "application/json",
                "Authorization": f"Bearer {OPENAI_KEY}",
                **headers,
            },
        )
        resp = conn.getresponse()
        data = resp.read().decode()
        capture_id = resp.getheader("X-Logproxy-Id")
    finally:
        conn.close()
    assert capture_id
    is_json = (resp.getheader("Content-Type") or "").startswith("application/json")
    return capture_id, json.loads(data) if is_json else data


def chat(
    lp: Logproxy, text: str, *, model: str = "gpt-4o-mini", stream: bool = False, **mock: Any
) -> tuple[str, Any]:
    body: dict[str, Any] = {
        "model": model,
        "stream": stream,
        "messages": [{"role": "user", "content": text}],
        "mock": mock,
    }
    if stream:
        body["stream_options"] = {"include_usage": True}
    return post(lp, "/mock/chat/completions", body)


def api(lp: Logproxy, path: str) -> Any:
    with urlopen(f"{lp.logserver_url}/api/{path}", timeout=10) as resp:
        return json.load(resp)


def row(page: Page, capture_id: str) -> Any:
    return page.locator(f'#rows tr[data-id="{capture_id}"]')


def others(page: Page, cell: str, text: str) -> Any:
    """The rows whose ``cell`` (an XPath step such as ``td[3]``) does not start with ``text``."""
    return page.locator(
        f"xpath=//tbody[@id='rows']/tr[not(starts-with(normalize-space({cell}), '{text}'))]"
    )


def run_shell(command: str, env: dict[str, str]) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        ["bash", "-c", command],
        env={"PATH": "/usr/bin:/bin", **env},
        capture_output=True,
        timeout=20,
        check=False,
    )


def open_ui(page: Page, lp: Logproxy, query: str = "", fragment: str = "") -> None:
    page.goto(f"{lp.logserver_url}/{query}{fragment}")
    expect(page.locator("#live")).to_have_class(re.compile(r"\bon\b"))  # events connected


# --------------------------------------------------------------------------- tests


def test_list_updates_live(page: Page, lp: Logproxy, pool: ThreadPoolExecutor) -> None:
    open_ui(page, lp)
    model = f"live-{uuid.uuid4().hex[:8]}"
    # made after the page loaded: appears without a reload, with its columns filled in
    capture_id, _ = chat(lp, "hello there", model=model)
    r = row(page, capture_id)
    expect(r).to_have_attribute("data-state", "done")
    expect(r.locator("td").nth(1)).to_have_text("POST")
    expect(r.locator("td").nth(2)).to_have_text("mock")
    expect(r.locator("td").nth(3)).to_have_text("/mock/chat/completions")
    expect(r.locator("td").nth(4)).to_have_text("200")
    expect(r.locator("td").nth(5)).to_have_text(model)
    expect(r.locator("td").nth(6)).to_have_text("2 / 5")
    # a stream: the row appears while in flight, then is finalised; newest first
    streaming = pool.submit(
        chat, lp, "stream me", model=model, stream=True, chunks=10, interval=0.1
    )
    inflight = page.locator('#rows tr[data-state="inflight"]')
    expect(inflight).to_have_count(1)
    expect(inflight.locator(".badge")).to_contain_text("streaming")
    shot(page, "test_list_updates_live-inflight")
    stream_id, _ = streaming.result(timeout=20)
    expect(row(page, stream_id)).to_have_attribute("data-state", "done")
    expect(page.locator("#rows tr").first).to_have_attribute("data-id", stream_id)
    expect(page.locator("#rows tr").nth(1)).to_have_attribute("data-id", capture_id)
    expect(row(page, stream_id).locator("td").nth(6)).to_have_text("2 / 10")


def test_filters_and_search(page: Page, lp: Logproxy) -> None:
    tag = uuid.uuid4().hex[:8]
    needle = f"needle{tag}"
    plain, _ = chat(lp, "nothing special", model=f"plain-{tag}")
    found, _ = chat(lp, f"find the {needle} here", model=f"plain-{tag}")
    failed, _ = chat(lp, "fail please", model=f"broken-{tag}", status=500)
    claude, _ = post(
        lp,
        "/anthropic/v1/messages",
        {
            "model": f"claude-{tag}",
            "max_tokens": 50,
            "messages": [{"role": "user", "content": "hi"}],
        },
        **{"anthropic-version": "2023-06-01"},
    )
    open_ui(page, lp)
    for capture_id in (plain, found, failed, claude):
        expect(row(page, capture_id)).to_be_visible()
    rows = page.locator("#rows tr")

    # route: only the anthropic route's captures, and the URL says so
    page.get_by_label("Route").fill("anthropic")
    expect(row(page, plain)).to_have_count(0)
    expect(row(page, claude)).to_be_visible()
    expect(others(page, "td[3]", "anthropic")).to_have_count(0)
    assert "route=anthropic" in page.url
    # a live capture of another route is not inserted; one of this route is
    other, _ = chat(lp, "not for this filter")
    claude2, _ = post(
        lp,
        "/anthropic/v1/messages",
        {
            "model": f"claude-{tag}",
            "max_tokens": 50,
            "messages": [{"role": "user", "content": "yo"}],
        },
        **{"anthropic-version": "2023-06-01"},
    )
    expect(row(page, claude2)).to_be_visible()
    expect(row(page, other)).to_have_count(0)
    page.get_by_role("button", name="Clear").click()
    expect(row(page, other)).to_be_visible()

    # model
    page.get_by_label("Model").fill(f"plain-{tag}")
    expect(rows).to_have_count(2)
    expect(row(page, plain)).to_be_visible()
    expect(row(page, found)).to_be_visible()
    # status, combined with the model (cleared first)
    page.get_by_label("Model").fill("")
    page.get_by_label("Status").select_option("5xx")
    expect(row(page, failed)).to_be_visible()
    expect(row(page, plain)).to_have_count(0)
    expect(others(page, "td[5]", "500")).to_have_count(0)
    page.get_by_label("Status").select_option("")
    # text search over the bodies
    page.get_by_label("Search").fill(needle)
    expect(rows).to_have_count(1)
    expect(row(page, found)).to_be_visible()
    assert f"q={needle}" in page.url
    shot(page, "test_filters_and_search-q")

    # the URL is shareable: opening it applies the filters
    open_ui(page, lp, f"?status=5xx&model=broken-{tag}")
    expect(page.get_by_label("Status")).to_have_value("5xx")
    expect(page.get_by_label("Model")).to_have_value(f"broken-{tag}")
    expect(rows).to_have_count(1)
    expect(row(page, failed)).to_be_visible()


def test_pages_of_50_load_on_scroll(page: Page, lp: Logproxy, pool: ThreadPoolExecutor) -> None:
    tag = uuid.uuid4().hex[:8]
    ids = list(
        pool.map(lambda i: chat(lp, f"page {i}", model=f"paged-{tag}-{i % 3}")[0], range(60))
    )
    wait_for(lambda: len(api(lp, f"requests?limit=100&model=paged-{tag}-*")["items"]) == 60)
    open_ui(page, lp, f"?model=paged-{tag}-*")  # a glob, as the API matches models
    rows = page.locator("#rows tr")
    expect(rows).to_have_count(50)  # one page, newest first
    page.locator("#more").scroll_into_view_if_needed()  # infinite scroll fetches the next page
    expect(rows).to_have_count(60)
    expect(page.locator("#more")).to_be_hidden()  # no next_cursor
    shown = page.eval_on_selector_all("#rows tr", "trs => trs.map(tr => tr.dataset.id)")
    assert sorted(shown) == sorted(ids)
    started = page.eval_on_selector_all("#rows tr", "trs => trs.map(tr => tr._n.startedMs)")
    assert started == sorted(started, reverse=True)


def test_detail_shows_conversation_reply_and_usage(page: Page, lp: Logproxy) -> None:
    body = {
        "model": "gpt-4o-mini",
        "stream": True,
        "stream_options": {"include_usage": True},
        "messages": [
            {"role": "system", "content": "You are a terse assistant."},
            {"role": "user", "content": "What is the weather in Paris?"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "call_abc",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "call_abc", "content": '{"sky": "clear"}'},
            {"role": "user", "content": [{"type": "text", "text": "So, umbrella or not?"}]},
        ],
        "mock": {"chunks": 7},
    }
    capture_id, _ = post(lp, "/mock/chat/completions", body)
    open_ui(page, lp)
    row(page, capture_id).locator("td").first.click()  # any cell opens it
    expect(page).to_have_url(re.compile(rf"#/requests/{capture_id}$"))
    view = page.locator("#detail-view")
    expect(view.locator("h2")).to_contain_text("/mock/chat/completions")
    turns = view.locator(".chat .turn")
    expect(turns).to_have_count(6)
    expect(turns.nth(0)).to_have_class(re.compile("role-system"))
    expect(turns.nth(0)).to_contain_text("You are a terse assistant.")
    expect(turns.nth(1)).to_contain_text("What is the weather in Paris?")
    expect(turns.nth(2).locator(".tool")).to_contain_text("get_weather")
    expect(turns.nth(2).locator(".tool")).to_contain_text('"city": "Paris"')
    expect(turns.nth(3)).to_have_class(re.compile("role-tool"))
    expect(turns.nth(3)).to_contain_text('"sky": "clear"')
    expect(turns.nth(4)).to_contain_text("So, umbrella or not?")
    reply = view.locator(".turn.reply")
    expect(reply.locator(".text")).to_have_text(expected_text(7))
    expect(reply).to_contain_text("finish: stop")
    usage = view.locator("#usage")
    expect(usage).to_contain_text("openai.chat")
    expect(usage.locator("dt:has-text('Output tokens') + dd")).to_have_text("7")
    expect(usage.locator("dt:has-text('TTFT') + dd")).to_have_text(re.compile(r"\d+ ms"))
    # headers as stored (the key redacted) and the SSE body as a list of events
    view.locator("summary", has_text="Request headers").click()
    expect(view.locator("table.headers").first).to_contain_text("X-Proxy-Path")
    expect(view.locator("td.redacted")).to_have_text(re.compile(r"^<redacted>"))
    view.locator("summary", has_text="Response body").click()
    expect(view.locator("ol.sse li")).to_have_count(7 + 4)  # role, 7 deltas, finish, usage, DONE
    view.locator("summary", has_text="Request body").click()
    expect(view.locator("pre.code .j-key").first).to_have_text('"model"')
    shot(page, "test_detail_shows_conversation_reply_and_usage-openai")

    # back to the list, then an Anthropic conversation opened by its link
    page.get_by_role("button", name="← All requests").click()
    expect(page.locator("#list-view")).to_be_visible()
    claude_id, _ = post(
        lp,
        "/anthropic/v1/messages",
        {
            "model": "claude-3-5-haiku",
            "max_tokens": 100,
            "system": [{"type": "text", "text": "Be brief."}],
            "messages": [
                {"role": "user", "content": "Weather?"},
                {
                    "role": "assistant",
                    "content": [
                        {"type": "text", "text": "Checking."},
                        {"type": "tool_use", "id": "toolu_1", "name": "weather", "input": {"q": 1}},
                    ],
                },
                {
                    "role": "user",
                    "content": [
                        {"type": "tool_result", "tool_use_id": "toolu_1", "content": "Rain"}
                    ],
                },
            ],
        },
        **{"anthropic-version": "2023-06-01"},
    )
    page.goto(f"{lp.logserver_url}/#/requests/{claude_id}")
    turns = page.locator("#detail-view .chat .turn")
    expect(turns).to_have_count(5)
    expect(turns.nth(0)).to_contain_text("Be brief.")
    expect(turns.nth(2).locator(".tool")).to_contain_text("weather")
    expect(turns.nth(3).locator(".tool.result")).to_contain_text("Rain")
    expect(turns.nth(4)).to_contain_text(expected_text(5))
    expect(page.locator("#usage")).to_contain_text("end_turn")


def test_live_stream_view_grows(page: Page, lp: Logproxy, pool: ThreadPoolExecutor) -> None:
    open_ui(page, lp)
    streaming: Future[tuple[str, Any]] = pool.submit(
        chat, lp, "write slowly", model="slow-model", stream=True, chunks=40, interval=0.1
    )
    inflight = page.locator('#rows tr[data-state="inflight"]')
    expect(inflight).to_have_count(1)
    inflight.locator("a").click()
    live = page.locator("#live-text")
    expect(live).to_be_visible()
    lengths = [0]
    for _ in range(3):  # the reassembled text grows at least three times while in flight
        handle = page.wait_for_function(
            "n => (document.querySelector('#live-text')?.textContent.length || 0) > n",
            arg=lengths[-1],
            timeout=TIMEOUT,
        )
        handle.dispose()
        lengths.append(len(live.text_content() or ""))
        assert not streaming.done(), f"the stream ended before the view grew: {lengths}"
    expect(page.locator("#detail-status")).to_have_text("in flight")
    shot(page, "test_live_stream_view_grows-streaming")
    assert lengths == sorted(lengths) and len(set(lengths)) == len(lengths)
    capture_id, _ = streaming.result(timeout=20)
    # the stream ended: the final detail replaces the live view
    expect(page.locator(".turn.reply:not(.live) .text")).to_have_text(expected_text(40))
    expect(page.locator("#detail-status")).to_contain_text("200")
    expect(page.locator("#live-text")).to_have_count(0)
    assert capture_id in page.url
    expect(page.locator("#usage dt:has-text('Output tokens') + dd")).to_have_text("40")


def test_copy_as_curl_replays(page: Page, lp: Logproxy) -> None:
    text = """it's "quoted" $HOME `uname` \\n and a newline\nhere"""
    capture_id, answer = post(
        lp,
        "/mock/chat/completions?trace=1&x=a%20b",
        {
            "model": "gpt-4o-mini",
            "messages": [{"role": "user", "content": text}],
            "mock": {"echo": True},
        },
        **{"Accept-Encoding": "gzip", "X-Custom": "a 'b' c"},
    )
    assert answer["choices"][0]["message"]["content"] == text
    page.context.grant_permissions(["clipboard-read", "clipboard-write"])
    open_ui(page, lp, fragment=f"#/requests/{capture_id}")
    page.get_by_role("button", name="Copy as curl").click()
    box = page.locator("#curl-text")
    expect(box).to_be_visible()
    expect(page.locator(".curl-head")).to_contain_text("copied")
    command = box.input_value()
    assert page.evaluate("navigator.clipboard.readText()") == command
    # the redacted key is a variable the user must set, clearly marked
    assert OPENAI_KEY not in command and "${OPENAI_API_KEY:?" in command
    expect(page.locator(".curl .note")).to_contain_text("Authorization was redacted")
    assert f"{lp.url}/mock/chat/completions?trace=1&x=a%20b" in command
    unset = run_shell(command, {})
    assert unset.returncode != 0 and b"OPENAI_API_KEY" in unset.stderr
    result = run_shell(command, {"OPENAI_API_KEY": OPENAI_KEY})
    assert result.returncode == 0, result.stderr
    replayed = json.loads(result.stdout)
    assert replayed["choices"][0]["message"] == answer["choices"][0]["message"]
    assert replayed["model"] == answer["model"]
    # the proxy captured the replay with the key and the headers the command sent
    replay = wait_for(
        lambda: (i := api(lp, "requests?limit=1")["items"]) and i[0]["id"] != capture_id and i[0],
        what="the replay to be indexed",
    )
    with urlopen(f"{lp.logserver_url}/api/requests/{replay['id']}/request", timeout=10) as resp:
        stored = resp.read()
    assert f"Authorization: <redacted>...{OPENAI_KEY[-4:]}".encode() in stored
    assert b"X-Custom: a 'b' c\r\n" in stored


def test_captured_markup_is_shown_as_text(page: Page, lp: Logproxy) -> None:
    evil = '<script>window.__xss = 1</script><img src=x onerror="window.__xss = 2"><b>bold</b>'
    capture_id, _ = post(
        lp,
        "/mock/chat/completions",
        {
            "model": '<img src=y onerror="window.__xss = 3">',
            "messages": [{"role": "system", "content": evil}, {"role": "user", "content": evil}],
            "mock": {"echo": True},
        },
        **{"X-Evil": '<img src=z onerror="window.__xss = 4">'},
    )
    open_ui(page, lp)
    expect(row(page, capture_id).locator("td").nth(5)).to_have_text(
        '<img src=y onerror="window.__xss = 3">'
    )
    row(page, capture_id).locator("a").click()
    view = page.locator("#detail-view")
    expect(view.locator(".turn.role-user .text")).to_have_text(evil)
    expect(view.locator(".turn.reply .text")).to_have_text(evil)
    page.evaluate("document.querySelectorAll('details').forEach(d => { d.open = true; })")
    expect(view.locator("table.headers").first).to_contain_text("onerror")
    expect(view.locator("pre.code").first).to_contain_text("<script>")
    assert page.locator("main img, main script, main b").count() == 0
    assert page.evaluate("window.__xss") is None


def test_token_flow(page: Page, browser: Browser, tmp_path: Path, mock: Mock) -> None:
    secured = start_ui_proxy(tmp_path, mock, token="s3cret-token")
    auth = page.locator("#auth")
    # a link with the token: the list, the live events and the detail are authorised
    page.goto(f"{secured.logserver_url}/?token=s3cret-token")
    expect(page.locator("#live")).to_have_class(re.compile(r"\bon\b"))
    expect(auth).to_be_hidden()
    capture_id, _ = post(
        secured,
        "/mock/chat/completions",
        {"model": "m", "messages": [{"role": "user", "content": "hi"}]},
    )
    expect(row(page, capture_id)).to_be_visible()
    row(page, capture_id).locator("a").click()
    expect(page.locator("#detail-view .turn.reply")).to_contain_text(expected_text(5))
    # a wrong token (the page itself loads on the cookie the first visit set): the prompt
    # says so, and entering the right one reloads the page with it
    page.goto(f"{secured.logserver_url}/?token=wrong")
    expect(auth).to_contain_text("not accepted")
    expect(page.locator("#list-view")).to_be_hidden()
    auth.get_by_label("Token").fill("s3cret-token")
    auth.get_by_role("button", name="Open").click()
    expect(page).to_have_url(re.compile(r"\?token=s3cret-token"))
    expect(page.locator("#live")).to_have_class(re.compile(r"\bon\b"))
    expect(row(page, capture_id)).to_be_visible()

    # a first visit without any token: SPEC section 10 keeps everything but /health behind
    # the token, so the Site answers 401 with a small form of its own asking for it
    fresh = browser.new_context(viewport={"width": 1400, "height": 900})
    try:
        first = fresh.new_page()
        answer = first.goto(f"{secured.logserver_url}/")
        assert answer is not None and answer.status == 401
        shot(first, "test_token_flow-401")
        first.get_by_label("Token").fill("s3cret-token")
        first.get_by_label("Token").press("Enter")
        expect(first).to_have_url(re.compile(r"\?token=s3cret-token"))
        expect(row(first, capture_id)).to_be_visible()
    finally:
        fresh.close()
