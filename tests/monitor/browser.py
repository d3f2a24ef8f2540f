"""Headless Chromium for the browser tests (Debian's ``chromium`` + ``chromium-driver``).

Nothing is downloaded at run time: the driver and browser are the system's, found on PATH
(``make test`` installs them with apt-get when it runs as root). Tests skip with the reason when
they are missing.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest

BROWSER_NAMES = ("chromium", "chromium-browser", "google-chrome")
#: Wall seconds a page gets to show an expected state (an upper bound, never a speed target).
PAGE_TIMEOUT_S = 180.0


def _find() -> tuple[str, str] | None:
    driver = shutil.which("chromedriver")
    browser = next((p for p in map(shutil.which, BROWSER_NAMES) if p), None)
    return (browser, driver) if driver and browser else None


@contextmanager
def chromium(width: int = 1400, height: int = 1500) -> Iterator[Any]:
    """A headless Chromium WebDriver (skips the test when unavailable)."""
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed "
                                    "(pip install -e '.[dev]')")
    from selenium.webdriver.chrome.service import Service

    found = _find()
    if found is None:
        pytest.skip("chromium and chromedriver are not on PATH; install them with "
                    "'apt-get install chromium chromium-driver' (make test does it as root)")
    browser, driver_path = found
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                f"--window-size={width},{height}", "--disable-extensions",
                "--no-first-run", "--disable-background-networking"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(executable_path=driver_path), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def wait_for(driver: Any, condition: Callable[[Any], Any], what: str,
             timeout_s: float = PAGE_TIMEOUT_S) -> Any:
    """Wait until ``condition(driver)`` is truthy; fail naming ``what`` and the page's state."""
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.support.ui import WebDriverWait

    try:
        return WebDriverWait(driver, timeout_s, poll_frequency=0.1).until(condition)
    except TimeoutException:
        header = driver.find_element("tag name", "header").text
        unit = driver.find_element("id", "unit").text
        pytest.fail(f"the page never showed {what} (header: {header!r}, unit: {unit!r})")


def text(driver: Any, element_id: str) -> str:
    """The element's text content (as in the DOM, whatever CSS does to its case)."""
    return (driver.find_element("id", element_id).get_attribute("textContent") or "").strip()
