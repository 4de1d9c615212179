"""The dashboard in a real headless browser (Debian's Chromium through Selenium and chromedriver), against a
real worker fed with real traffic: the chart shows the numbers /api/counts gives, a new batch of traffic
appears without a reload, the filters work, and the moods come in from the stream.

SENTIMENT_DASHBOARD_SCREENSHOT=docs/img/dashboard.png writes the screenshot the docs show.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from selenium import webdriver
from selenium.common.exceptions import WebDriverException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select

from tests.integration.live import Api, Live
from worker.pytest_plugin import unavailable

LABELS = ("negative", "neutral", "positive")
CHROMIUM = os.environ.get("SENTIMENT_TEST_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("SENTIMENT_TEST_CHROMEDRIVER", "/usr/bin/chromedriver")


@pytest.fixture(scope="module")
def browser() -> Iterator[webdriver.Chrome]:
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not shutil.which(p)]
    if missing:
        unavailable(
            f"no headless browser: {', '.join(missing)} not found (apt-get install chromium chromium-driver)"
        )
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,1000"):
        options.add_argument(arg)
    try:
        driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    except WebDriverException as exc:
        unavailable(f"chromium did not start: {exc.msg}")
    driver.set_script_timeout(10)
    yield driver
    driver.quit()


def wait_for(check: Callable[[], Any], what: str, timeout_s: float = 30) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def chart(driver: webdriver.Chrome) -> dict[str, int]:
    """What the chart draws: the counts summed over its bars, per label, and its own totals."""
    drawn: dict[str, int] = driver.execute_script(
        """
        const out = {negative: 0, neutral: 0, positive: 0};
        for (const bar of document.querySelectorAll('#chart rect.bar')) {
          out[bar.dataset.label] += +bar.dataset.count;
        }
        out.total = +(document.getElementById('chart').dataset.total ?? -1);
        out.shown_total = +document.getElementById('total-total').textContent.replace(/\\D/g, '');
        return out;
        """
    )
    return drawn


def counts_of(api: Api, query: str) -> dict[str, int]:
    status, body = api.get(f"/api/counts?window=1h{query}")
    assert status == 200 and isinstance(body, dict)
    return {label: body[label] for label in (*LABELS, "total")}


def matches(driver: webdriver.Chrome, api: Api, query: str = "") -> bool:
    drawn, counts = chart(driver), counts_of(api, query)
    return drawn["shown_total"] == counts["total"] and {k: drawn[k] for k in counts} == counts


def test_dashboard_shows_the_counts_and_follows_new_traffic_without_reloading(
    live: Live, api: Api, browser: webdriver.Chrome, tmp_path: Path
) -> None:
    live.wait_counted()
    browser.get(api.url + "/")
    wait_for(lambda: matches(browser, api), "the chart to show /api/counts")
    assert chart(browser)["total"] == live.produced
    assert len(browser.find_elements(By.CSS_SELECTOR, "#chart rect.bar")) > 0
    browser.execute_script("window.__same_page = true")

    before = live.produced
    live.send(60, seed=3)
    live.wait_counted()
    wait_for(lambda: chart(browser)["total"] == before + 60, "the new batch on the chart")
    assert matches(browser, api)
    assert browser.execute_script("return window.__same_page") is True  # no reload happened

    # Moods from the stream: a row per conversation with the mood the API reports.
    def mood_rows() -> dict[str, str]:
        rows = browser.find_elements(By.CSS_SELECTOR, "#moods tr")
        return {
            r.get_attribute("data-conversation") or "": r.find_element(By.CSS_SELECTOR, ".mood").text
            for r in rows
        }

    def moods_match() -> bool:
        rows = mood_rows()
        if not {"c0", "c1", "c2"} <= rows.keys():
            return False
        return all(rows[c] == api.get(f"/api/mood/{c}")[1]["label"] for c in ("c0", "c1", "c2"))  # type: ignore[index]

    wait_for(moods_match, "the moods table to show the API's moods")

    # Filters: kind, then a source, each redraws with the matching counts.
    Select(browser.find_element(By.ID, "kind")).select_by_value("review")
    wait_for(lambda: matches(browser, api, "&kind=review"), "the review-only chart")
    source = browser.find_element(By.ID, "source")
    source.send_keys("shop")
    wait_for(lambda: matches(browser, api, "&kind=review&source=shop"), "the shop-only chart")
    assert 0 < chart(browser)["total"] < live.produced
    source.clear()
    Select(browser.find_element(By.ID, "kind")).select_by_value("")
    wait_for(lambda: matches(browser, api), "the unfiltered chart again")

    shot = tmp_path / "dashboard.png"
    assert browser.save_screenshot(str(shot))
    target = os.environ.get("SENTIMENT_DASHBOARD_SCREENSHOT")
    if target:
        Path(target).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shot, target)
    errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert errors == []


def test_dashboard_asks_for_the_token_and_then_works(live: Live, browser: webdriver.Chrome) -> None:
    server = live.serve(SENTIMENT_API_TOKEN="dashboard-token")
    browser.get(server.url + "/")
    wait_for(lambda: browser.find_element(By.ID, "login").is_displayed(), "the token form")
    browser.find_element(By.ID, "token").send_keys("dashboard-token")
    browser.find_element(By.CSS_SELECTOR, "#login button").click()
    wait_for(lambda: matches(browser, server), "the chart with the token")
    wait_for(lambda: browser.find_element(By.ID, "status").text == "live", "the mood stream with the token")
    # A token in the URL fragment (never sent to the server) works too, and leaves the address bar.
    browser.execute_script("sessionStorage.clear()")
    browser.get("about:blank")
    browser.get(server.url + "/#token=dashboard-token")
    wait_for(lambda: matches(browser, server), "the chart with the fragment's token")
    assert "token" not in browser.current_url
    assert browser.find_element(By.ID, "login").is_displayed() is False
