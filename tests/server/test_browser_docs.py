"""The API docs in a real headless Chromium, under the CSP the server sends with them."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
from test_browser import CHROMIUM, CHROMIUM_ARGS, WAIT_MS, _playwright

from latentsearch.server.app import create_app
from latentsearch.server.running import serve_in_thread

if TYPE_CHECKING:
    from conftest import Built

pytestmark = pytest.mark.browser

RENDERED = {
    "/docs": "() => document.querySelectorAll('.opblock').length > 3",
    "/redoc": "() => document.querySelectorAll('[data-section-id]').length > 3",
}


@pytest.mark.parametrize("path", sorted(RENDERED))
def test_docs_render_under_their_csp(built: Built, path: str) -> None:
    sync_api = _playwright()
    with serve_in_thread(create_app(built.index)) as url, sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            problems: list[str] = []
            page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
            page.on(
                "console",
                lambda m: problems.append(m.text) if m.type in ("error", "warning") else None,
            )
            response = page.goto(f"{url}{path}")
            assert response is not None
            assert "script-src" in response.headers["content-security-policy"]
            page.wait_for_function(RENDERED[path], timeout=WAIT_MS)
        finally:
            browser.close()
    # ReDoc's logo from cdn.redoc.ly is refused, as anything from elsewhere should be.
    refused = [p for p in problems if "Content Security Policy" in p or "page error" in p]
    assert not [p for p in refused if not p.startswith("Loading the image 'https://")]
