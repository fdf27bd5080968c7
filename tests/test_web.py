"""``r3l serve`` end to end: a real headless Chromium uploads an image, adds noise, waits for the result and
checks the page's PSNR against ``r3l eval``; a bad upload shows its error and the server keeps serving.

Needs Debian's ``chromium`` and ``chromium-driver`` (``.ci/run`` installs them) and selenium (the test extra).
``R3L_SCREENSHOT_DIR`` keeps the screenshot there; the README's is made that way, with
``R3L_WEB_CHECKPOINT=src/r3l/models/weights/r3n-gray-blind.safetensors`` (the default gray model).
"""

import json
import os
import shutil
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from conftest import DATASETS, ROOT, needs_shared, train_tiny
from r3l.cli import main

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
if os.environ.get("CI") and not (CHROMIUM and CHROMEDRIVER):
    raise RuntimeError("CI is set but chromium/chromedriver are missing (.ci/run installs them)")
needs_browser = pytest.mark.skipif(not (CHROMIUM and CHROMEDRIVER), reason="chromium and chromedriver not installed")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = train_tiny(tmp_path_factory.mktemp("web"))
    # R3L_WEB_CHECKPOINT serves a real model instead of the tiny one (for the README's screenshot).
    checkpoint = Path(os.environ.get("R3L_WEB_CHECKPOINT") or root / "run" / "best.safetensors")
    proc = subprocess.Popen([sys.executable, "-m", "r3l", "serve", "--port", "0", "--device", "cpu",
                             "--checkpoint", str(checkpoint)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, cwd=ROOT)
    try:
        line = proc.stdout.readline()
        assert line.startswith("serving r3l on http://127.0.0.1:"), (line, proc.stderr.read() if proc.poll() else "")
        url = line.split()[3]
        yield url, checkpoint, root
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@pytest.fixture
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--window-size=1280,900"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def _denoise(driver, path: Path, sigma: int):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    driver.find_element(By.ID, "file").send_keys(str(path))
    sigma_box = driver.find_element(By.ID, "sigma")
    sigma_box.clear()
    sigma_box.send_keys(str(sigma))
    driver.find_element(By.ID, "run").click()
    wait = WebDriverWait(driver, 120, poll_frequency=0.2)
    wait.until(lambda d: d.find_element(By.ID, "run").is_enabled() and
               (d.find_element(By.ID, "error").text or d.find_elements(By.ID, "psnr")))
    return driver.find_element(By.ID, "error").text


@needs_shared
@needs_browser
def test_upload_denoise_and_psnr_equal_to_eval(server, browser, tmp_path, capsys):
    from selenium.webdriver.common.by import By

    url, checkpoint, _ = server
    image = tmp_path / "data" / "test001.png"
    image.parent.mkdir()
    shutil.copy(DATASETS / "BSD68" / "test001.png", image)
    browser.get(url)
    assert _denoise(browser, image, 25) == ""
    assert browser.find_element(By.ID, "warning").text == ""  # σ 25 is the tiny model's training level
    page_psnr = float(browser.find_element(By.ID, "psnr").get_attribute("data-psnr"))
    page_ssim = float(browser.find_element(By.ID, "ssim").get_attribute("data-ssim"))
    assert main(["eval", "--checkpoint", str(checkpoint), "--data", str(image.parent), "--sigma", "25",
                 "--seed", "0", "--json", str(tmp_path / "eval.json"), "--quiet"]) == 0
    row = json.loads((tmp_path / "eval.json").read_text())["images"][0]
    assert page_psnr == pytest.approx(row["psnr"], abs=1e-9) and page_ssim == pytest.approx(row["ssim"], abs=1e-9)
    # The images and the step animation are on the page; the download is the full-size 8-bit PNG.
    from PIL import Image

    width = Image.open(image).size[0]
    assert browser.find_element(By.ID, "denoised").get_attribute("naturalWidth") == str(width)
    if not os.environ.get("R3L_WEB_CHECKPOINT"):  # the tiny R3L has step maps; a served R3N has none
        assert "step" in browser.find_element(By.ID, "steplabel").text
    href = browser.find_element(By.ID, "download").get_attribute("href")
    with urllib.request.urlopen(href, timeout=30) as answer:
        body = answer.read()
    assert body[:8] == b"\x89PNG\r\n\x1a\n"
    shots = Path(os.environ.get("R3L_SCREENSHOT_DIR") or tmp_path)
    shots.mkdir(parents=True, exist_ok=True)
    assert browser.save_screenshot(str(shots / "web_demo.png"))


@needs_browser
def test_a_bad_upload_shows_its_error_and_the_next_one_works(server, browser, tmp_path):
    from selenium.webdriver.common.by import By

    url, _, root = server
    bad = tmp_path / "broken.png"
    bad.write_text("this is not an image")
    browser.get(url)
    error = _denoise(browser, bad, 0)
    assert error == "broken.png: not a readable image (expected PNG, JPEG, BMP or TIFF)"
    assert _denoise(browser, root / "test" / "t0.png", 15) == ""
    assert float(browser.find_element(By.ID, "psnr").get_attribute("data-psnr")) > 0


def test_serve_refuses_bad_arguments_before_listening(tmp_path, capsys):
    assert main(["serve", "--checkpoint", str(tmp_path / "missing.safetensors")]) == 2
    assert "checkpoint not found" in capsys.readouterr().err


def test_upload_limit_and_unknown_model_are_clear(server):
    url, _, root = server
    data = (root / "test" / "t0.png").read_bytes()
    for query, expected in (("model=nope", "model 'nope' is not offered here"),
                            ("sigma=500", "sigma 500: expected a noise level between 0 and 100")):
        request = urllib.request.Request(f"{url}api/denoise?{query}&name=t0.png", data=data, method="POST")
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(request, timeout=30)
        assert expected in json.loads(info.value.read())["error"]
    with urllib.request.urlopen(f"{url}api/models", timeout=30) as answer:  # still serving
        assert json.loads(answer.read())[0]["name"].endswith(".safetensors")


def test_a_noise_level_outside_the_training_range_is_noted(server):
    """The tiny model was trained at σ 25: σ 60 added on the page gets the one-line note, σ 25 none."""
    import time

    url, _, root = server
    data = (root / "test" / "t0.png").read_bytes()
    notes = {}
    for sigma in (25, 60):
        request = urllib.request.Request(f"{url}api/denoise?sigma={sigma}&name=t0.png", data=data, method="POST")
        with urllib.request.urlopen(request, timeout=30) as answer:
            job = json.loads(answer.read())["job"]
        for _ in range(300):
            with urllib.request.urlopen(f"{url}api/job/{job}", timeout=30) as answer:
                status = json.loads(answer.read())
            if status["status"] != "running":
                break
            time.sleep(0.1)
        assert status["status"] == "done", status
        notes[sigma] = status["warning"]
    assert notes[25] == ""
    assert notes[60].startswith("noise sigma 60, outside the model's training sigma 25: expect noise left in")
