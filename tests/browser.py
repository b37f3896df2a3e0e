"""Headless Debian Chromium through selenium, with the flags this machine needs."""

from __future__ import annotations

import shutil
from pathlib import Path

from tests.conftest import require

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"


def chromium(profile: Path):
    """A fresh-profile headless browser; without the network flags it stalls on lookups."""
    require(Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists(),
            "Debian packages chromium and chromium-driver are not installed")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run", "--disable-sync", "--disable-quic",
                 "--window-size=1400,1000", f"--user-data-dir={profile}"):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(shutil.which("chromedriver") or CHROMEDRIVER), options=options)
