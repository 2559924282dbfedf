"""The web playground at `/`, driven in headless Chromium (Debian's
`chromium` and `chromium-driver`, installed by scripts/test.sh) against the
real server: type, send, see the streamed answer, stop a long one (the
server aborts it), and a reasoning model's thinking shown apart and
collapsible."""

import shutil
import tempfile
import time

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from conftest import ROOT, Server

R1 = ROOT / "tests" / "fixtures" / "tiny-r1-qwen2"


@pytest.fixture(scope="module")
def browser():
    chromium, driver_path = shutil.which("chromium"), shutil.which("chromedriver")
    if not chromium or not driver_path:
        pytest.fail("chromium and chromedriver are missing: scripts/test.sh installs them")
    profile = tempfile.mkdtemp(prefix="pagoda-chromium-")
    options = Options()
    options.binary_location = chromium
    for flag in (
        "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        f"--user-data-dir={profile}",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()
    shutil.rmtree(profile, ignore_errors=True)


def field(browser, element_id, value):
    element = browser.find_element(By.ID, element_id)
    element.clear()
    element.send_keys(value)


def open_playground(browser, server):
    browser.get(server.url + "/")
    WebDriverWait(browser, 60).until(
        lambda d: "model:" in d.find_element(By.ID, "status").text
    )


def last_assistant(browser):
    return browser.find_elements(By.CSS_SELECTOR, ".message.assistant")[-1]


def send(browser, text):
    browser.find_element(By.ID, "prompt").send_keys(text)
    browser.find_element(By.ID, "send").click()


def aborted(server):
    metrics = urllib_get(server.url + "/metrics")
    for line in metrics.splitlines():
        if line.startswith('pagoda_requests_finished_total{outcome="aborted"}'):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def urllib_get(url):
    import urllib.request

    with urllib.request.urlopen(url, timeout=10) as r:
        return r.read().decode()


def test_the_page_is_self_contained(server):
    import urllib.request

    with urllib.request.urlopen(server.url + "/", timeout=10) as r:
        page, headers = r.read().decode(), r.headers
    assert "<title>pagoda playground</title>" in page
    # Its own script and style only, under a strict policy: nothing inline,
    # nothing from a CDN, no framing, no sniffing.
    policy = headers["Content-Security-Policy"]
    assert "default-src 'none'" in policy and "script-src 'self'" in policy, policy
    assert "frame-ancestors 'none'" in policy and "unsafe-inline" not in policy, policy
    assert headers["X-Frame-Options"] == "DENY"
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert "<script>" not in page and "<style>" not in page
    for asset in ("/playground.js", "/playground.css"):
        body = urllib_get(server.url + asset)
        assert "http://" not in body and "https://" not in body, asset
    # The API key is kept for the tab only.
    script = urllib_get(server.url + "/playground.js")
    assert "sessionStorage" in script and "localStorage" not in script


def test_chat_streams_an_answer_and_stop_cancels(server, browser):
    open_playground(browser, server)
    field(browser, "system", "You are a helpful assistant.")
    field(browser, "temperature", "0")
    field(browser, "max-tokens", "24")
    send(browser, "What is the capital of France?")
    wait = WebDriverWait(browser, 120)
    wait.until(lambda d: last_assistant(d).get_attribute("data-state"))
    answer = last_assistant(browser)
    assert answer.get_attribute("data-state") == "done"
    assert "Paris" in answer.find_element(By.CLASS_NAME, "content").text
    stats = answer.find_element(By.CLASS_NAME, "stats").text
    assert "tok/s" in stats and "tokens" in stats, stats
    # No thinking from a model that does not reason.
    assert not answer.find_element(By.CSS_SELECTOR, "details.reasoning").is_displayed()

    # A long answer, stopped as soon as it streams.
    before = aborted(server)
    field(browser, "max-tokens", "3000")
    send(browser, "Write a very long story about a dragon, in many chapters.")
    wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, ".message.assistant")) == 2
               and last_assistant(d).find_element(By.CLASS_NAME, "content").text.strip())
    browser.find_element(By.ID, "stop").click()
    wait.until(lambda d: last_assistant(d).get_attribute("data-state") == "stopped")
    stopped = last_assistant(browser).find_element(By.CLASS_NAME, "content").text
    time.sleep(1.0)
    assert last_assistant(browser).find_element(By.CLASS_NAME, "content").text == stopped
    assert browser.find_element(By.ID, "send").is_enabled()
    assert not browser.find_element(By.ID, "stop").is_enabled()
    # The server saw the client go and aborted the generation.
    deadline = time.monotonic() + 15
    while aborted(server) <= before and time.monotonic() < deadline:
        time.sleep(0.2)
    assert aborted(server) > before


def test_a_reasoning_models_thinking_is_shown_apart_and_collapsible(browser):
    s = Server("--chat-template", str(R1 / "chat_template_think.jinja"), model=R1)
    try:
        open_playground(browser, s)
        field(browser, "temperature", "0")
        field(browser, "max-tokens", "16")
        # The tiny model never closes its thinking: the server's budget does.
        browser.execute_script(
            "window.__fetch = window.fetch; window.fetch = (u, o) => {"
            " if (o && o.body) { const b = JSON.parse(o.body); b.max_reasoning_tokens = 4;"
            " o = Object.assign({}, o, {body: JSON.stringify(b)}); } return window.__fetch(u, o); };"
        )
        send(browser, "What is 2 + 2?")
        wait = WebDriverWait(browser, 60)
        wait.until(lambda d: last_assistant(d).get_attribute("data-state") == "done")
        answer = last_assistant(browser)
        details = answer.find_element(By.CSS_SELECTOR, "details.reasoning")
        assert details.is_displayed()
        # Folded away, so read its text rather than what is visible.
        thinking = details.find_element(By.CLASS_NAME, "text").get_attribute("textContent")
        content = answer.find_element(By.CLASS_NAME, "content").text
        assert thinking and content and "think>" not in content
        # Folded once the answer began; a click opens it.
        assert details.get_attribute("open") is None
        details.find_element(By.TAG_NAME, "summary").click()
        assert details.get_attribute("open") is not None
    finally:
        s.stop()
