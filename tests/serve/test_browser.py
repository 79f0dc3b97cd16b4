"""The page in a real browser: Debian's chromium, headless, driven by Selenium through Debian's chromedriver
(nothing downloaded at test time). Drops two images (one broken) on the page, waits for the result, moves the
before/after slider, zooms, and downloads one result and the zip. Under CI=true a missing browser, driver or
selenium is a failure (.ci/run installs them); elsewhere the test is skipped."""

from __future__ import annotations

import base64
import io
import os
import shutil
import time
import zipfile
from pathlib import Path

import pytest
import torch

from serve.helpers import png_bytes

pytestmark = [pytest.mark.browser, pytest.mark.subprocess, pytest.mark.slow]

DRIVER = "/usr/bin/chromedriver"
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", "--window-size=1280,900")
DROP = """
const files = arguments[0].map(([b64, name]) =>
  new File([Uint8Array.from(atob(b64), (c) => c.charCodeAt(0))], name, {type: "image/png"}));
const data = new DataTransfer();
files.forEach((f) => data.items.add(f));
const zone = document.getElementById("drop");
for (const type of ["dragenter", "dragover", "drop"])
  zone.dispatchEvent(new DragEvent(type, {dataTransfer: data, bubbles: true, cancelable: true}));
"""


def _missing(what: str):
    if os.environ.get("CI") == "true":
        pytest.fail(f"{what} under CI=true (.ci/run installs chromium, chromium-driver and the test extra)")
    pytest.skip(f"{what} (apt-get install chromium chromium-driver; pip install selenium)")


def chromium_driver(profile: Path, downloads: Path):
    chromium = shutil.which("chromium")
    if chromium is None or not Path(DRIVER).exists():
        _missing("Debian's chromium or chromium-driver is not installed")
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        _missing("selenium is not installed")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in (*FLAGS, f"--user-data-dir={profile}"):
        options.add_argument(flag)
    options.add_experimental_option("prefs", {"download.default_directory": str(downloads),
                                              "download.prompt_for_download": False})
    driver = webdriver.Chrome(service=Service(executable_path=DRIVER), options=options)
    driver.execute_cdp_cmd("Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(downloads)})
    return driver


def wait_for(condition, timeout: float = 120, what: str = "the page"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def test_the_page_upscales_in_chromium(live_server, reference, tmp_path, monkeypatch):
    monkeypatch.setenv("SE_OFFLINE", "true")  # Selenium Manager must not fetch anything
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    driver = chromium_driver(tmp_path / "profile", downloads)
    try:
        server = live_server("--model", "defian-s", "--model", "bicubic", "--threads", str(torch.get_num_threads()))
        _drive(driver, server.url, downloads, reference)
    finally:
        driver.quit()


def _drive(driver, url: str, downloads: Path, reference) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    driver.get(url)
    wait_for(lambda: driver.find_elements(By.CSS_SELECTOR, "#model option"), what="the model list")
    assert "ready" in wait_for(lambda: driver.find_element(By.ID, "server-line").text.strip() != "connecting…"
                               and driver.find_element(By.ID, "server-line").text)
    good = png_bytes(40, 48, seed=11)
    driver.execute_script(DROP, [[base64.b64encode(good).decode(), "photo.png"],
                                 [base64.b64encode(good[:100]).decode(), "broken.png"]])
    done = wait_for(lambda: driver.find_elements(By.CSS_SELECTOR, "li.item.done"), what="the result")
    failed = wait_for(lambda: driver.find_elements(By.CSS_SELECTOR, "li.item.failed"), what="the failed file")
    error = failed[0].find_element(By.CLASS_NAME, "error").text
    assert error.startswith("broken.png: ") and "\n" not in error  # one line for the bad file, the other went on
    assert not failed[0].find_element(By.CLASS_NAME, "download").is_displayed()
    assert done[0].find_element(By.CLASS_NAME, "download").is_displayed()
    assert driver.execute_script("return document.getElementById('after').naturalWidth") == 96  # x2
    clip = lambda: driver.execute_script("return document.getElementById('before').style.clipPath")  # noqa: E731
    assert clip() == "inset(0px 50% 0px 0px)"
    driver.find_element(By.ID, "split").send_keys(*[Keys.ARROW_LEFT] * 20)  # the slider, by keyboard
    assert clip() == "inset(0px 70% 0px 0px)"
    scale = "return document.getElementById('stage').style.transform"
    before_zoom = driver.execute_script(scale)
    driver.execute_script("document.getElementById('viewer').dispatchEvent(new WheelEvent('wheel', "
                          "{deltaY: -100, clientX: 300, clientY: 300, bubbles: true, cancelable: true}))")
    assert driver.execute_script(scale) != before_zoom  # one transform moves both images: zoom stays in step
    expected = reference("photo.png", good)
    done[0].find_element(By.CLASS_NAME, "download").click()
    one = wait_for(lambda: _finished(downloads, "photo_x2.png"), what="the download")
    assert one.read_bytes() == expected
    driver.find_element(By.ID, "download-all").click()
    archive = wait_for(lambda: _finished(downloads, "sisr-results.zip"), what="the zip")
    assert zipfile.ZipFile(io.BytesIO(archive.read_bytes())).read("photo_x2.png") == expected
    shot = os.environ.get("SISR_SERVE_SCREENSHOT")
    if shot:
        driver.save_screenshot(shot)


def _finished(folder: Path, name: str) -> Path | None:
    path = folder / name
    if path.exists() and not list(folder.glob("*.crdownload")):
        return path
    return None
