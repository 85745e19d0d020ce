"""The status page in a real browser: Debian's headless Chromium driven by Selenium, against the
demo played by a running station. The page loads with nothing from the internet, shows the
demo's five ports, follows a restore's progress live, and shows a certificate once the token is
given. Its screenshots are the README's: `STATION_SCREENSHOTS=docs` keeps them there
(docs/status-page.png, docs/certificate.png); otherwise they go to the test's own folder."""
from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import WebDriverWait

import debian
from web.running import ROOT, TOKEN, Running, playing_demo

CHROMIUM, DRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")


@pytest.fixture(scope="module")
def browser() -> Iterator[WebDriver]:
    debian.ensure(("chromium", "chromium-driver"), (CHROMIUM, DRIVER))
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,1000",
                     "--disable-gpu", "--no-first-run"):
        options.add_argument(argument)
    driver = webdriver.Chrome(options=options, service=Service(str(DRIVER)))
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


CARDS_JS = """return Array.from(document.querySelectorAll('#ports .port')).map(card => [
    card.dataset.slot, card.dataset.state, (card.querySelector('.label') || {innerText: ''}).innerText, card.innerText]);"""


def port_cards(browser: WebDriver) -> dict[int, dict[str, str]]:
    """Slot -> what its card shows (state, label, text), read from the page as drawn: in one
    script, so the live feed cannot redraw the cards between one card's reads and another's."""
    return {int(slot): {"state": state, "label": label.strip(), "text": text}
            for slot, state, label, text in browser.execute_script(CARDS_JS)}


@pytest.fixture
def fresh_demo(browser: WebDriver, tmp_path: Path) -> Iterator[Running]:
    """The demo from its start, once the browser is up: the session's shared demo may have been
    played to its end by the tests before this one, with no restore left to follow live."""
    with playing_demo(tmp_path) as running:
        yield running


@pytest.fixture
def shots(tmp_path: Path) -> Path:
    wanted = os.environ.get("STATION_SCREENSHOTS")
    return ROOT / wanted if wanted else tmp_path


def test_the_page_follows_the_demo_and_shows_a_certificate(browser: WebDriver, fresh_demo: Running, shots: Path):
    demo = fresh_demo
    wait = WebDriverWait(browser, 60, poll_frequency=0.1)
    browser.get(demo.base + "/")
    wait.until(lambda b: len(port_cards(b)) == 5 and "live" == b.find_element(By.ID, "link").text)

    # Live: one restore's percentage, seen rising on the page itself (no reload). Two readings
    # are enough: the simulated image is small, so a restore shows few percentages.
    seen: dict[int, list[int]] = {}  # each restoring slot's percentages, in the order the page showed them
    deadline = time.monotonic() + 60
    while not any(len(percents) >= 2 for percents in seen.values()):
        assert time.monotonic() < deadline, f"no restore seen progressing: {seen}"
        for slot, card in port_cards(browser).items():
            if card["state"] == "restoring" and card["label"].endswith("%"):
                shown, percent = seen.setdefault(slot, []), int(card["label"][:-1])
                if not shown or shown[-1] != percent:
                    shown.append(percent)
        time.sleep(0.1)
    rising = next(percents for percents in seen.values() if len(percents) >= 2)
    assert rising == sorted(rising), f"a restore's percentage went back on the page: {seen}"
    # Without the token: the models and states, never a serial.
    text = browser.find_element(By.ID, "ports").text
    assert "iPhone 14" in text and "F2LXQ0J1N7KC" not in text
    assert port_cards(browser)[2]["label"] == "LOCKED" and "Find My is on" in port_cards(browser)[2]["text"]

    # The token, given once in this tab: serials show, records offer their certificates.
    browser.find_element(By.ID, "token").send_keys(TOKEN)
    browser.find_element(By.CSS_SELECTOR, "#token-form button[type=submit]").click()
    wait.until(lambda b: "G6TZK2P4Q1MN" in b.find_element(By.ID, "ports").text)
    assert browser.save_screenshot(str(shots / "status-page.png"))
    wait.until(lambda b: b.find_elements(By.CSS_SELECTOR, "tr[data-record] button.show-certificate"))
    row = browser.find_element(By.CSS_SELECTOR, "tr[data-record] button.show-certificate")
    record = row.find_element(By.XPATH, "./ancestor::tr").get_attribute("data-record")
    row.click()
    wait.until(lambda b: b.find_element(By.ID, "certificate").is_displayed())
    frame = browser.find_element(By.ID, "certificate-frame")
    browser.execute_script("arguments[0].scrollIntoView()", browser.find_element(By.ID, "certificate"))
    browser.switch_to.frame(frame)
    wait.until(lambda b: "Certificate of Sanitization" in b.find_element(By.TAG_NAME, "h1").text)
    printed = browser.find_element(By.TAG_NAME, "body").text
    browser.switch_to.default_content()
    certificate = demo.call(f"/api/certificates/{record}", token=TOKEN)[1]
    assert certificate["media"]["serial"] and certificate["media"]["serial"] in printed
    assert certificate["signature"] in printed and certificate["certificate_id"] in printed
    assert browser.save_screenshot(str(shots / "certificate.png"))
    # Nothing was fetched from anywhere but the station.
    resources = browser.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
    assert resources and all(url.startswith(demo.base) for url in resources), resources
