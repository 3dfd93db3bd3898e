"""Operator view: served by the daemon, opened in headless Chromium, updated live."""

from __future__ import annotations

import json
import os
import shutil
import time
import urllib.error
import urllib.request
from pathlib import Path

import cv2
import numpy as np
import pytest

from tests.helpers import free_endpoint
from tests.system.line import SPLIT_VERDICTS_CONFIG, collect, header, serve, strip

pytestmark = pytest.mark.slow

DAEMON_CONFIG = SPLIT_VERDICTS_CONFIG


def get(port: int, path: str) -> bytes:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as response:
        return response.read()


@pytest.fixture
def line_with_view(trained_bundle, tmp_path):
    config = tmp_path / "serve.toml"
    config.write_text(DAEMON_CONFIG)
    port = int(free_endpoint().rsplit(":", 1)[1])
    with serve(trained_bundle, "--config", str(config), "--http", f"127.0.0.1:{port}") as d:
        yield d, port


def send(d, n: int) -> None:
    for i in range(n):
        camera = "bad" if i % 2 == 0 else "good"
        d.sender.send(header(camera, i, (256, 800)), strip(i, (256, 800)))
    assert len(collect(d.subscriber, n).results) == n


def test_stats_and_overlays_over_http(line_with_view):
    d, port = line_with_view
    send(d, 6)
    deadline = time.monotonic() + 10
    while True:  # the render thread works at its own capped rate
        stats = json.loads(get(port, "/stats.json"))
        if stats["cameras"].get("bad", {}).get("reject_version"):
            break
        assert time.monotonic() < deadline, stats
        time.sleep(0.2)
    assert stats["frames"] == 6 and stats["rejects"] == 3
    assert stats["cameras"]["bad"]["class_rates"]["1"] == 1.0
    assert stats["latency_p50_ms"] is not None and stats["model"] == "mini"
    image = cv2.imdecode(np.frombuffer(get(port, "/frame/bad.jpg"), np.uint8), cv2.IMREAD_COLOR)
    assert image.shape == (256, 800, 3)
    reject = cv2.imdecode(np.frombuffer(get(port, "/reject/bad.jpg"), np.uint8),
                          cv2.IMREAD_COLOR)
    assert reject.shape == (256, 800, 3)
    page, script = get(port, "/"), get(port, "/view.js")
    assert b"<script>" not in page and b"<style>" not in page  # nothing inline: CSP holds
    assert b"EventSource" in script and b"http" not in script  # no assets from elsewhere
    assert b"innerHTML" not in script


def test_every_response_carries_a_restrictive_content_security_policy(line_with_view):
    _, port = line_with_view
    for path in ("/", "/view.js", "/view.css", "/stats.json", "/frame/none.jpg"):
        try:
            response = urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10)
        except urllib.error.HTTPError as exc:  # the 404 carries it too
            response = exc
        policy = response.headers["Content-Security-Policy"]
        assert "default-src 'none'" in policy and "script-src 'self'" in policy, path
        assert "unsafe-inline" not in policy and response.headers["X-Content-Type-Options"]


def chromium(tmp_path):
    """Headless Debian Chromium through chromedriver (skips, saying why, without them)."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if not (browser and driver):
        pytest.skip("Chromium and chromedriver are not installed (Debian: apt-get install "
                    "chromium chromium-driver; .ci/run does this)")
    os.environ.setdefault("SE_OFFLINE", "true")  # selenium must not fetch drivers
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--window-size=1400,1000",
                 f"--user-data-dir={tmp_path / 'profile'}"):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(driver), options=options)


def test_page_in_headless_chromium_updates_live(line_with_view, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    d, port = line_with_view
    browser = chromium(tmp_path)
    try:
        browser.get(f"http://127.0.0.1:{port}/")
        WebDriverWait(browser, 20).until(
            lambda b: b.find_element(By.ID, "connection").text == "live")
        n = 8
        send(d, n)  # frames arrive after the page is open: only live updates can show them
        WebDriverWait(browser, 30).until(
            lambda b: b.find_element(By.ID, "frames-total").text == str(n))
        WebDriverWait(browser, 30).until(lambda b: b.execute_script(
            "return [...document.querySelectorAll('img.latest, img.reject')]"
            ".filter(i => i.complete && i.naturalWidth > 0).length") >= 3)
        assert browser.find_element(By.ID, "rejects-total").text == str(n // 2)
        shot = Path(os.environ.get("OPERATOR_VIEW_SCREENSHOT", tmp_path / "view.png"))
        assert browser.save_screenshot(str(shot))
        picture = cv2.imread(str(shot))
        assert picture is not None and picture.std() > 10  # a rendered page, not blank
    finally:
        browser.quit()


HOSTILE = ["<img src=x onerror=\"document.title='pwned'\">",
           "<script>window.pwned=1</script>"]


def test_a_hostile_camera_id_runs_no_script_in_the_operator_s_browser(line_with_view,
                                                                      tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    d, port = line_with_view
    browser = chromium(tmp_path)
    try:
        browser.get(f"http://127.0.0.1:{port}/")
        WebDriverWait(browser, 20).until(
            lambda b: b.find_element(By.ID, "connection").text == "live")
        for i, camera in enumerate(HOSTILE):
            d.sender.send(header(camera, i, (256, 512)), strip(i, (256, 512)))
        assert len(collect(d.subscriber, len(HOSTILE)).results) == len(HOSTILE)
        WebDriverWait(browser, 30).until(lambda b: len(b.find_elements(
            By.CSS_SELECTOR, ".camera .name")) == len(HOSTILE))
        time.sleep(1.5)  # several live updates, and the overlays, have arrived
        names = [e.text for e in browser.find_elements(By.CSS_SELECTOR, ".camera .name")]
        assert sorted(names) == sorted(HOSTILE)  # shown as text, exactly as sent
        assert browser.title == "lineside operator view"
        assert browser.execute_script("return window.pwned === undefined")
        images = browser.find_elements(By.TAG_NAME, "img")
        assert all(i.get_attribute("class") in ("latest", "reject") for i in images)
        assert len(images) == 2 * len(HOSTILE)  # no element made from a camera id
    finally:
        browser.quit()
