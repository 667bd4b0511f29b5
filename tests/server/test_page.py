"""End-to-end: the web page in headless Chromium against a live server (skips without Chromium)."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")

pytestmark = pytest.mark.skipif(not (CHROMIUM.exists() and CHROMEDRIVER.exists()),
                                reason="headless Chromium (chromium, chromium-driver) absent")
webdriver = pytest.importorskip("selenium.webdriver")


@pytest.fixture(scope="module")
def browser() -> Any:
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="mmedrag-chromium-")
    options = Options()
    options.binary_location = str(CHROMIUM)
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
                 f"--user-data-dir={profile}", "--window-size=1440,1100"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=options)
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def _wait(driver: Any, condition: Any, timeout: float = 60) -> Any:
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout).until(condition)


def _screenshot(driver: Any, name: str, tmp_path: Path) -> Path:
    height, chrome = driver.execute_script(
        "return [document.documentElement.scrollHeight, window.outerHeight - window.innerHeight]")
    driver.set_window_size(1440, min(int(height) + int(chrome) + 8, 4000))
    path = tmp_path / name
    driver.save_screenshot(str(path))
    target = os.environ.get("MMEDRAG_SCREENSHOT_DIR")
    if target:
        Path(target).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, Path(target) / name)
    return path


def test_upload_ask_and_see_cited_evidence(browser: Any, live: Any, sample_image: Path,
                                           tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    question = "Is the spleen normal size?"
    with live.client() as client, open(sample_image, "rb") as handle:
        expected = client.post("/v1/answer", data={"question": question, "task": "closed_vqa"},
                               files={"image": (sample_image.name, handle, "image/jpeg")}).json()
    assert expected["evidence"], "the echo pipeline should retrieve evidence for this question"

    browser.get(live.url + "/")
    loaded = "#gallery .thumb img[src^='blob:']"
    _wait(browser, lambda d: len(d.find_elements(By.CSS_SELECTOR, loaded)) >= 24)
    assert "36 records" in browser.find_element(By.ID, "index-summary").text
    browser.find_element(By.ID, "image-input").send_keys(str(sample_image))
    _wait(browser, lambda d: d.find_element(By.ID, "preview").is_displayed())
    assert sample_image.name in browser.find_element(By.ID, "image-name").text
    browser.find_element(By.ID, "question").send_keys(question)
    Select(browser.find_element(By.ID, "task")).select_by_value("closed_vqa")
    browser.find_element(By.ID, "ask-button").click()
    _wait(browser, lambda d: d.find_element(By.ID, "answer").is_displayed())

    cards = browser.find_elements(By.CSS_SELECTOR, "#evidence .card")
    assert len(cards) == len(expected["evidence"])
    assert browser.find_element(By.ID, "answer-text").text == expected["text"]
    first = expected["evidence"][0]
    caption = cards[0].find_element(By.CSS_SELECTOR, ".caption")
    assert caption.get_attribute("textContent") == first["text"]  # the whole text, clamped by CSS
    assert caption.text.startswith(first["text"][:40])
    assert first["id"] in cards[0].find_element(By.CSS_SELECTOR, ".card-id").text
    assert ("cited" in cards[0].get_attribute("class")) == first["cited"]
    assert browser.find_element(By.ID, "k-value").text == f"k = {expected['selection']['k']}"
    assert browser.find_element(By.ID, "k-reason").text == expected["selection"]["reason"]
    assert "image not seen by the model" in browser.find_element(By.ID, "answer-badges").text
    stages = [e.text.lower() for e in browser.find_elements(By.CSS_SELECTOR, "#timing .t-name")]
    assert "generate" in stages and "retrieve" in stages
    _wait(browser, lambda d: all(i.get_attribute("src").startswith("blob:") for i in
                                 d.find_elements(By.CSS_SELECTOR, "#evidence .card-image img")))
    shot = _screenshot(browser, "mmedrag-page-answer.png", tmp_path)
    assert shot.stat().st_size > 20_000


def test_pick_from_gallery_and_search_only(browser: Any, live: Any, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By

    browser.get(live.url + "/")
    thumbs = _wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "#gallery .thumb"))
    picked = thumbs[3].get_attribute("data-id")
    thumbs[3].click()
    _wait(browser, lambda d: picked in d.find_element(By.ID, "image-name").text)
    browser.find_element(By.ID, "search-button").click()
    cards = _wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "#evidence .card"))
    assert len(cards) == 8
    # image-to-image search ranks the picked image itself first
    assert picked in cards[0].find_element(By.CSS_SELECTOR, ".card-id").text
    title = browser.find_element(By.ID, "evidence-title").get_attribute("textContent")
    assert title == "Search results (dense-image)"  # no router or tower: image→image


def test_error_banner_when_question_missing(browser: Any, live: Any) -> None:
    from selenium.webdriver.common.by import By

    browser.get(live.url + "/")
    _wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "#task option"))
    browser.find_element(By.ID, "ask-button").click()
    banner = _wait(browser, lambda d: d.find_element(By.ID, "banner") if
                   d.find_element(By.ID, "banner").is_displayed() else None)
    assert "question" in banner.text.lower()
