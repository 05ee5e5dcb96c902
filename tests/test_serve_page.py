"""The page at GET / in a real headless browser (the system Chromium, driven by Playwright):
pick a story, ask, see the answer highlighted with its score, alternatives and what the server
runs; a follow-up question adds to the visible history. Loopback only; nothing from a CDN."""
import os
import shutil
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
CHROMIUM = next((p for p in ("/usr/bin/chromium", "/usr/bin/chromium-browser", shutil.which("chromium") or "")
                 if p and Path(p).is_file()), None)
DOCS_SHOT = Path(__file__).resolve().parent.parent / "docs" / "serve-page.png"   # BERTQA_SCREENSHOT=1


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api", reason="the page test needs playwright "
                                   "(pip install 'bertqa[browser]')")
    if CHROMIUM is None:
        pytest.skip("no Chromium found at /usr/bin/chromium (apt-get install -y chromium)")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield b
        b.close()


def test_page_answers_highlights_and_keeps_history(server, browser, stories, tmp_path):
    page = browser.new_page(viewport={"width": 1000, "height": 900})
    outside = []
    page.on("request", lambda r: outside.append(r.url) if not r.url.startswith(server.url) else None)
    page.goto(server.url + "/", timeout=30_000)
    page.locator("#runs b").nth(3).wait_for(timeout=30_000)       # the page's CSP allows no eval
    runs = page.inner_text("#runs")
    assert "minilm-l6-squad" in runs and "cpu" in runs and "fp" in runs and "backend" in runs
    assert page.input_value("#context") == stories[0].context
    page.fill("#question", "Who kept the lighthouse?")
    page.click("#ask")
    page.wait_for_selector("#story mark", timeout=30_000)
    assert page.inner_text("#story mark") == "Margarethe Olsen"
    assert "Answer: Margarethe Olsen" in page.inner_text("#best")
    assert "ms in the server" in page.inner_text("#latency")
    assert page.locator("#alternatives tbody tr").count() == 3
    page.fill("#question", stories[0].questions[1])
    page.click("#ask")
    page.locator("#history li").nth(1).wait_for(timeout=30_000)
    history = page.inner_text("#history")
    assert "Who kept the lighthouse?" in history and stories[0].questions[1] in history
    shot = DOCS_SHOT if os.environ.get("BERTQA_SCREENSHOT") == "1" else tmp_path / "page.png"
    page.screenshot(path=str(shot), full_page=False)
    assert shot.stat().st_size > 10_000
    assert not outside, f"the page fetched from elsewhere: {outside}"
    page.close()
