"""The search page in a real headless Chromium: upload, results, click-through, errors."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from latentsearch.server.app import create_app
from latentsearch.server.running import serve_in_thread

if TYPE_CHECKING:
    from conftest import Built

pytestmark = pytest.mark.browser

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
WAIT_MS = 60_000
"""Generous: the page is quick, but the CPUs may be shared with training runs."""

RESULTS_LOADED = """(n) => {
    const imgs = [...document.querySelectorAll('#grid img')];
    return imgs.length >= n && imgs.every((i) => i.complete && i.naturalWidth > 0);
}"""


def test_page_searches_in_a_real_browser(built: Built, tmp_path: Path) -> None:
    if not CHROMIUM.exists():
        pytest.skip(f"no Chromium at {CHROMIUM} (Debian: apt-get install chromium)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="needs playwright for Python")

    app = create_app(built.index)
    with serve_in_thread(app) as url, sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 800})
            problems: list[str] = []
            page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
            page.on(
                "console",
                lambda m: (
                    problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None
                ),
            )
            page.goto(f"{url}/")
            page.wait_for_function(
                "() => document.querySelectorAll('#k option').length > 0", timeout=WAIT_MS
            )
            assert "16 images" in page.inner_text("#index-info")

            # Upload: the file itself comes back first, with its class and a distance.
            page.select_option("#k", "5")
            page.set_input_files("#file", str(built.folder / "red" / "1.png"))
            page.wait_for_function(RESULTS_LOADED, arg=5, timeout=WAIT_MS)
            page.screenshot(path=str(tmp_path / "upload.png"), full_page=True)
            captions = page.locator("#grid .caption").all_inner_texts()
            assert len(captions) == 5
            assert "red" in captions[0] and "d = 0" in captions[0]
            assert page.locator("#query-image").is_visible()

            # Clicking a result searches with it: it becomes the query.
            page.locator("#grid .card").nth(1).click()
            page.wait_for_function(
                "() => document.querySelector('#query-meta')?.textContent.includes('id')",
                timeout=WAIT_MS,
            )
            page.wait_for_function(RESULTS_LOADED, arg=5, timeout=WAIT_MS)
            assert "share the query's class" in page.inner_text("#results-title")
            page.screenshot(path=str(tmp_path / "item.png"), full_page=True)

            # Random query, then an error from the API shown to the user.
            page.click("#random")
            page.wait_for_function(RESULTS_LOADED, arg=5, timeout=WAIT_MS)
            not_image = tmp_path / "notes.png"
            not_image.write_text("not an image at all")
            page.set_input_files("#file", str(not_image))
            page.wait_for_selector("#error:not([hidden])", timeout=WAIT_MS)
            assert "not an image" in page.inner_text("#error")
            assert "415" in page.inner_text("#error")
            page.screenshot(path=str(tmp_path / "error.png"), full_page=True)
            # The 415 is logged by Chromium as a failed resource; nothing else may fail.
            assert [p for p in problems if "415" not in p] == []
        finally:
            browser.close()
