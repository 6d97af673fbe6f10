"""The dashboard, end to end: Debian's Chromium driven by Playwright (no browser download), against
the real stack (Triton on the CPU profile, the adapter serving the built app).

The browser talks to an adapter of its own: it downloads from the tests' local Hub, keeps its Hugging
Face token in its own model cache, and needs the admin key and an API key, entered in Settings as a
person would. Every test checks that the page made only same-origin requests. Screenshots of each page
(desktop light, phone dark) go to artifacts/dashboard/ (not committed)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, BrowserContext, Page, Playwright, expect, sync_playwright

from conftest import ADMIN_KEY, API_KEYS, generation_settle, start_hub_adapter
from hub_server import HubServer
from passerelle_stack.launcher import Stack
from speech import SpeechSet

REPO = Path(__file__).resolve().parents[1]
AXE = REPO / "dashboard" / "node_modules" / "axe-core" / "axe.min.js"
ARTIFACTS = Path(os.environ.get("PASSERELLE_ARTIFACTS", REPO / "artifacts")) / "dashboard"
PAGES = ("overview", "models", "playground", "settings")
TOKEN = "hf_dashboardSecret0123456789abcdef"
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    # The machine's network is closed: without these Chromium keeps trying Google's services.
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
    # The microphone: Chromium's fake capture device plays a file, and no permission prompt shows.
    "--use-fake-ui-for-media-stream",
    "--use-fake-device-for-media-stream",
]


def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        pytest.fail("Debian's chromium is not installed: scripts/test installs it (apt-get install chromium)")
    return found


@pytest.fixture(scope="module")
def hub() -> Iterator[HubServer]:
    with HubServer(throttle_bps=1024 * 1024) as server:
        yield server


@pytest.fixture(scope="module")
def dashboard_url(stack: Stack, hub: HubServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    cache = tmp_path_factory.mktemp("dashboard-cache")
    url = start_hub_adapter(stack, hub, cache, "adapter-dashboard", status_interval_s=1)
    yield url
    stack.stop(names=["adapter-dashboard"])


@pytest.fixture(scope="module")
def microphone_wav(speech: SpeechSet, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """What the fake microphone says: the two-voice dialogue, as Chromium's capture file wants it."""
    target = tmp_path_factory.mktemp("microphone") / "microphone.wav"
    subprocess.run(
        ["ffmpeg", "-nostdin", "-v", "error", "-y", "-i", str(speech.dialogue), "-ar", "48000", "-ac", "1", str(target)], check=True
    )
    return target


@pytest.fixture(scope="module")
def browser(microphone_wav: Path) -> Iterator[Browser]:
    playwright: Playwright = sync_playwright().start()
    try:
        launched = playwright.chromium.launch(
            executable_path=chromium(), args=[*CHROMIUM_FLAGS, f"--use-file-for-fake-audio-capture={microphone_wav}"]
        )
        yield launched
        launched.close()
    finally:
        playwright.stop()


@dataclass
class Session:
    """A browser tab on the dashboard, with its network log."""

    page: Page
    origin: str
    requests: list[Any] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def goto(self, name: str) -> None:
        self.page.goto(f"{self.origin}/#/{name}")
        expect(self.page.get_by_role("heading", level=1)).to_have_text(name.capitalize())

    def sign_in(self) -> None:
        """Keys are entered once per browser session, in Settings, as a person would."""
        self.goto("settings")
        self.page.get_by_label("Admin key", exact=True).fill(ADMIN_KEY)
        self.page.get_by_role("button", name="Use admin key", exact=True).click()
        self.page.get_by_label("API key", exact=True).fill(API_KEYS[0])
        self.page.get_by_role("button", name="Use API key", exact=True).click()

    def foreign_requests(self) -> list[str]:
        return [request.url for request in self.requests if not request.url.startswith((self.origin + "/", "data:", "blob:"))]

    def axe_violations(self) -> list[dict[str, Any]]:
        """axe-core's serious and critical violations on the page as it is now."""
        self.page.evaluate(AXE.read_text())  # through the debugger: the page's CSP allows no injected script
        found: list[dict[str, Any]] = self.page.evaluate(
            """async () => (await axe.run(document, {resultTypes: ["violations"]})).violations
                .filter((v) => v.impact === "serious" || v.impact === "critical")
                .map((v) => ({id: v.id, impact: v.impact, help: v.help, nodes: v.nodes.slice(0, 5).map((n) => n.target.join(" "))}))"""
        )
        return found

    def screenshot(self, name: str) -> Path:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        path = ARTIFACTS / f"{name}.png"
        self.page.screenshot(path=str(path), full_page=True)
        return path


def _session(browser: Browser, origin: str, **options: Any) -> Iterator[Session]:
    # The app runs under its Content-Security-Policy: a violation shows in the console, watched below.
    context: BrowserContext = browser.new_context(base_url=origin, accept_downloads=True, **options)
    page = context.new_page()
    session = Session(page, origin)
    page.on("request", lambda request: session.requests.append(request))
    page.on("pageerror", lambda error: session.errors.append(str(error)))
    page.on("console", lambda message: session.errors.append(message.text) if "Content Security Policy" in message.text else None)
    yield session
    context.close()
    assert session.foreign_requests() == [], "the dashboard made requests to other origins"
    assert session.errors == [], "the dashboard threw"


@pytest.fixture
def session(browser: Browser, dashboard_url: str) -> Iterator[Session]:
    yield from _session(browser, dashboard_url, viewport={"width": 1366, "height": 900})


def _card(page: Page, model: str) -> Any:
    return page.get_by_role("article", name=model, exact=True)


def test_every_page_has_no_serious_accessibility_violations_in_light_and_dark(browser: Browser, dashboard_url: str) -> None:
    for scheme in ("light", "dark"):
        for session in _session(browser, dashboard_url, viewport={"width": 1366, "height": 900}, color_scheme=scheme):
            session.sign_in()
            for name in PAGES:
                session.goto(name)
                session.page.wait_for_timeout(1500)  # the first poll answered, charts drawn
                assert session.axe_violations() == [], f"{name} ({scheme})"
                if scheme == "light":
                    session.screenshot(f"{name}-desktop-light")


def test_phone_size_and_dark_theme(browser: Browser, dashboard_url: str) -> None:
    phone = {"viewport": {"width": 390, "height": 844}, "device_scale_factor": 2, "is_mobile": True, "has_touch": True}
    for session in _session(browser, dashboard_url, color_scheme="dark", **phone):
        session.sign_in()
        for name in PAGES:
            session.goto(name)
            session.page.wait_for_timeout(1000)
            # Usable on a phone: nothing wider than the screen (no sideways scrolling of the page).
            width = session.page.evaluate("document.documentElement.scrollWidth")
            assert width <= 390, f"{name} is {width} px wide on a 390 px phone"
            background = session.page.evaluate("getComputedStyle(document.body).backgroundColor")
            assert _luminance(background) < 0.2, f"{name} is not dark: {background}"
            session.screenshot(f"{name}-phone-dark")


def _luminance(css_color: str) -> float:
    red, green, blue = (int(value) / 255 for value in re.findall(r"\d+", css_color)[:3])
    return 0.2126 * red + 0.7152 * green + 0.0722 * blue


def test_overview_shows_triton_and_no_gpu_here(session: Session) -> None:
    session.sign_in()
    session.goto("overview")
    page = session.page
    gpus = page.get_by_role("region", name="GPUs")
    expect(gpus).to_contain_text("no GPU", timeout=15_000)
    expect(page.get_by_role("region", name="Triton")).to_contain_text("2.51")
    expect(page.get_by_role("region", name="Host")).to_contain_text("%")
    assert page.locator(".uplot").count() >= 1  # charts drawn with uPlot


def test_load_a_model_from_its_card_then_unload_it(session: Session) -> None:
    session.sign_in()
    session.goto("models")
    card = _card(session.page, "tiny_echo")
    state = card.locator("[data-state]").first
    expect(state).to_have_attribute("data-state", "UNAVAILABLE", timeout=30_000)
    expect(card.get_by_label("GPU")).to_be_disabled()  # no GPU here: the choice says so
    card.get_by_label("Instances").fill("2")
    card.get_by_role("button", name="Load", exact=True).click()
    expect(state).to_have_attribute("data-state", "READY", timeout=120_000)
    card.get_by_role("button", name="Unload", exact=True).click()
    dialog = session.page.get_by_role("dialog")
    expect(dialog).to_contain_text("Unload tiny_echo?")
    dialog.get_by_role("button", name="Unload", exact=True).click()
    expect(state).to_have_attribute("data-state", "UNAVAILABLE", timeout=120_000)


def test_a_model_that_fails_to_load_shows_why_in_words(session: Session) -> None:
    session.sign_in()
    session.goto("models")
    card = _card(session.page, "broken")
    card.get_by_role("button", name="Load", exact=True).click()
    alert = card.get_by_role("alert")
    expect(alert).to_be_visible(timeout=120_000)
    assert "Traceback" not in alert.inner_text()


def test_download_from_the_local_hub_shows_progress(session: Session) -> None:
    session.sign_in()
    session.goto("models")
    card = _card(session.page, "hub_public")
    card.get_by_role("button", name="Download", exact=True).click()
    progress = card.get_by_role("progressbar", name="Download progress")
    expect(progress).to_be_visible(timeout=30_000)
    seen = set()
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and progress.count():
        value = progress.get_attribute("aria-valuenow") or progress.get_attribute("value")
        if value is not None:
            seen.add(round(float(value)))
        session.page.wait_for_timeout(300)
    assert len(seen) >= 2, f"the progress bar did not move: {seen}"
    expect(card).to_contain_text("cached", timeout=30_000)


def test_hugging_face_token_is_set_and_deleted_without_ever_being_shown(session: Session, dashboard_url: str) -> None:
    session.sign_in()
    session.goto("settings")
    page = session.page
    captured: list[bytes] = []
    page.on("response", lambda response: captured.append(response.body()) if response.request.resource_type in ("fetch", "xhr") else None)
    page.get_by_role("textbox", name="Hugging Face token", exact=True).fill(TOKEN)
    page.get_by_role("button", name="Save token", exact=True).click()
    section = page.get_by_role("region", name="Hugging Face token")
    expect(section).to_contain_text(TOKEN[:3], timeout=15_000)
    expect(page.get_by_role("textbox", name="Hugging Face token", exact=True)).to_have_value("")
    assert TOKEN not in page.content()
    assert TOKEN not in page.evaluate("JSON.stringify(sessionStorage) + JSON.stringify(localStorage) + document.cookie")
    state = httpx.get(f"{dashboard_url}/api/admin/huggingface/token", headers={"X-Admin-Key": ADMIN_KEY}).json()
    assert state["configured"] is True
    page.get_by_role("button", name="Delete token", exact=True).click()
    expect(section).to_contain_text("Not configured", timeout=15_000)
    assert httpx.get(f"{dashboard_url}/api/admin/huggingface/token", headers={"X-Admin-Key": ADMIN_KEY}).json()["configured"] is False
    # The network log: the token went out once, in the body of the PUT that set it; no URL, response
    # or other request carried it.
    carried = [request for request in session.requests if TOKEN in (request.post_data or "") or TOKEN in request.url]
    assert [(request.method, request.url.rsplit("/", 2)[-2:]) for request in carried] == [("PUT", ["huggingface", "token"])]
    assert not [body for body in captured if TOKEN.encode() in body]


def test_chat_streams_and_stop_cancels_the_generation_in_the_engine(session: Session, stack: Stack) -> None:
    max_tokens = 4000
    session.sign_in()
    session.goto("playground")
    page = session.page
    page.get_by_role("tab", name="Chat", exact=True).click()
    before = generation_settle(stack)
    page.get_by_label("Max tokens").fill(str(max_tokens))
    page.get_by_label("Ignore EOS").check()
    page.get_by_label("Message").fill("Tell me a very long story.")
    page.get_by_role("button", name="Send", exact=True).click()
    stop = page.get_by_role("button", name="Stop", exact=True)
    expect(stop).to_be_enabled(timeout=60_000)
    conversation = page.get_by_role("log", name="Conversation")
    # Streaming: text grows while the answer runs.
    first = _answer_length(conversation)
    deadline = time.monotonic() + 60
    while _answer_length(conversation) <= first and time.monotonic() < deadline:
        page.wait_for_timeout(200)
    assert _answer_length(conversation) > first, "no streamed text arrived"
    stop.click()
    expect(stop).to_be_disabled(timeout=15_000)
    expect(conversation).to_contain_text("stopped")
    session.screenshot("playground-chat")
    after = generation_settle(stack)
    generated = after["tokens"] - before["tokens"]
    assert 0 < generated < max_tokens, f"the engine generated {generated} tokens after Stop"
    assert after["length"] == before["length"], "the generation ran to max_tokens"


def _answer_length(conversation: Any) -> int:
    return len(conversation.inner_text())


def test_audio_upload_shows_transcript_speaker_timeline_and_subtitles(session: Session, speech: SpeechSet, tmp_path: Path) -> None:
    session.sign_in()
    session.goto("playground")
    page = session.page
    page.get_by_role("tab", name="Audio", exact=True).click()
    page.get_by_label("Audio file").set_input_files(str(speech.dialogue))
    page.get_by_role("radio", name="Transcribe", exact=True).check()
    page.get_by_label("Speakers").check()
    page.get_by_role("button", name="Run", exact=True).click()
    # The audio models load on this first request (LAZY_LOAD_MODELS): minutes on 2 cores.
    expect(page.get_by_role("link", name="Download SRT", exact=True)).to_be_visible(timeout=400_000)
    result = page.get_by_role("region", name="Result")
    expect(result).to_contain_text("SPEAKER_")
    assert _result_duration(result) == pytest.approx(speech.dialogue_s, abs=0.1)
    timeline = page.get_by_role("group", name="Speaker timeline")
    bars = timeline.get_by_role("button")
    expect(bars.first).to_be_visible()
    assert bars.count() >= 2
    session.screenshot("playground-audio-result")
    # Click a turn: the audio plays that span.
    label = bars.nth(1).get_attribute("aria-label") or ""
    start, end = (float(value) for value in re.findall(r"(\d+(?:\.\d+)?) s", label)[:2])
    bars.nth(1).click()
    page.wait_for_function("() => { const a = document.querySelector('audio'); return a && !a.paused && a.currentTime > 0; }")
    position = page.evaluate("document.querySelector('audio').currentTime")
    assert start - 0.05 <= position <= end + 0.3, (start, position, end)
    page.wait_for_function("() => document.querySelector('audio').paused", timeout=int((end - start + 10) * 1000))
    assert page.evaluate("document.querySelector('audio').currentTime") <= end + 0.5
    # Subtitles, downloaded.
    for kind, pattern in (("SRT", r"^1\r?\n\d\d:\d\d:\d\d,\d{3} --> \d\d:\d\d:\d\d,\d{3}"), ("VTT", r"^WEBVTT")):
        with page.expect_download() as download:
            page.get_by_role("link", name=f"Download {kind}", exact=True).click()
        path = tmp_path / f"subtitles.{kind.lower()}"
        download.value.save_as(path)
        assert re.search(pattern, path.read_text()), path.read_text()[:200]


def test_microphone_recording_is_transcribed(session: Session) -> None:
    session.sign_in()
    session.goto("playground")
    page = session.page
    page.get_by_role("tab", name="Audio", exact=True).click()
    page.get_by_role("button", name="Record", exact=True).click()
    page.wait_for_timeout(4000)
    page.get_by_role("button", name="Stop recording", exact=True).click()
    page.get_by_role("radio", name="Transcribe", exact=True).check()
    page.get_by_role("button", name="Run", exact=True).click()
    # The audio models load on this first request (LAZY_LOAD_MODELS): minutes on 2 cores.
    expect(page.get_by_role("link", name="Download SRT", exact=True)).to_be_visible(timeout=400_000)
    result = page.get_by_role("region", name="Result")
    expect(page.get_by_role("alert")).to_have_count(0)
    # The server decoded about the 4 s that were recorded from the fake microphone.
    assert 2.5 < _result_duration(result) < 8


def _result_duration(result: Any) -> float:
    found = re.search(r"Duration\s*([\d.]+)\s*s", result.inner_text())
    assert found is not None, result.inner_text()
    return float(found.group(1))
