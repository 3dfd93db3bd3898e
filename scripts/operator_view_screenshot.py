"""Screenshot of the operator view on the demo line, for docs/operator-view.png.

Run after `make demo` (it uses demo-output/bundle and demo-output/replay):
    .venv/bin/python scripts/operator_view_screenshot.py
Needs Debian's chromium and chromium-driver.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from lineside.edge.client import ResultSubscriber

FRAMES, PORT = 24, 8087


def main() -> None:
    os.environ.setdefault("SE_OFFLINE", "true")
    serve = subprocess.Popen([sys.executable, "-m", "lineside.edge.cli.serve",
                              "demo-output/bundle", "--backend", "ort-cpu", "--input",
                              "tcp://127.0.0.1:5655", "--output", "tcp://127.0.0.1:5656",
                              "--http", f"127.0.0.1:{PORT}"])
    try:
        ResultSubscriber("tcp://127.0.0.1:5656").wait_ready(60)
        options = webdriver.ChromeOptions()
        options.binary_location = "/usr/bin/chromium"
        for flag in ("--headless=new", "--no-sandbox", "--disable-gpu",
                     "--disable-background-networking", "--window-size=1400,1000",
                     f"--user-data-dir={tempfile.mkdtemp()}"):
            options.add_argument(flag)
        browser = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
        browser.get(f"http://127.0.0.1:{PORT}/")
        for camera, first in (("lane1", 0), ("lane2", 1000)):
            subprocess.run([sys.executable, "-m", "lineside.tools.camsim",
                            "demo-output/replay", "--endpoint", "tcp://127.0.0.1:5655",
                            "--rate", "6", "--count", str(FRAMES // 2), "--camera-id", camera,
                            "--first-frame-id", str(first)], check=True)
        WebDriverWait(browser, 60).until(
            lambda b: b.find_element(By.ID, "frames-total").text == str(FRAMES))
        time.sleep(1.5)  # the render thread's next pass
        browser.save_screenshot("docs/operator-view.png")
        browser.quit()
    finally:
        serve.send_signal(signal.SIGTERM)
        serve.wait(30)


if __name__ == "__main__":
    main()
