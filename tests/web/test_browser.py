"""The unsubscribe pages in a real browser (headless Chromium), as a recipient meets them."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from kit.project import Project
from sqlmodel import Session, select

from engine.models import CampaignSuppressionRow, EventRow, SuppressionRow
from engine.sending.real_run import run_campaign
from engine.web import BackgroundServer

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[object]:
    webdriver = pytest.importorskip("selenium.webdriver")
    if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
        message = "Debian's chromium and chromium-driver are needed (.ci/run installs them)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        f"--user-data-dir={tmp_path / 'chrome'}",
    ):
        options.add_argument(flag)
    service = webdriver.ChromeService(executable_path=CHROMEDRIVER)
    driver = webdriver.Chrome(options=options, service=service)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


def test_unsubscribing_from_an_email_in_a_browser(
    sqlite_project: Project, browser: object, tmp_path: Path
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    with BackgroundServer(sqlite_project.engine()) as server:
        engine = sqlite_project.engine(tracking_base_url=server.url)
        sqlite_project.seed(engine, people=2)
        run_campaign(engine, "alerts", run_id="r1")
        message = engine.memory_outbox[0]
        link = message.headers["List-Unsubscribe"].strip("<>")
        assert link.startswith(f"{server.url}/u/")

        browser.get(link)  # type: ignore[attr-defined]
        page = browser.find_element(By.TAG_NAME, "body").text  # type: ignore[attr-defined]
        assert "Which emails should stop?" in page
        assert "Stop the “Test alerts” emails only" in page  # the campaign, by its name
        assert "Stop all emails to this address" in page
        server.drain()
        with Session(engine.db) as session:  # a page view alone unsubscribes nobody
            assert session.exec(select(SuppressionRow)).all() == []

        def choose(scope: str, answer: str) -> str:
            button = f"button[value='{scope}']"
            browser.find_element(By.CSS_SELECTOR, button).click()  # type: ignore[attr-defined]
            # The click starts a form POST: wait for the answer page, not the old one's.
            WebDriverWait(browser, 30).until(  # type: ignore[arg-type]
                lambda b: answer in b.page_source
            )
            server.drain()
            return str(browser.find_element(By.TAG_NAME, "body").text)  # type: ignore[attr-defined]

        body = choose("campaign", "You are unsubscribed from the")
        assert "Our other emails may still reach you." in body
        with Session(engine.db) as session:
            scoped = session.exec(select(CampaignSuppressionRow)).all()
            assert session.exec(select(SuppressionRow)).all() == []
        assert [(s.email, s.campaign) for s in scoped] == [(message.to_address, "alerts")]

        body = choose("all", "You are unsubscribed from all our emails")  # offered on that page
        assert "No further email will be sent to this address." in body
        browser.save_screenshot(str(tmp_path / "unsubscribed.png"))  # type: ignore[attr-defined]

        with Session(engine.db) as session:
            suppressed = session.exec(select(SuppressionRow)).all()
            events = session.exec(select(EventRow)).all()
        assert [(s.email, s.reason) for s in suppressed] == [(message.to_address, "unsubscribe")]
        assert [(e.type, e.data["scope"]) for e in events] == [
            ("unsubscribe", "campaign"),
            ("unsubscribe", "all"),
        ]
        # The next run honours it at once.
        summary = run_campaign(engine, "alerts", run_id="r2")
        assert (summary.sent, summary.skipped) == (1, 1)
