"""The search page in a real headless Chromium: upload, results, click-through, errors."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest

from latentsearch.index import ImageIndex
from latentsearch.server.app import create_app
from latentsearch.server.limits import ServeLimits
from latentsearch.server.running import serve_in_thread

if TYPE_CHECKING:
    from conftest import Built, Headed

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


def _playwright() -> Any:
    """Playwright's sync API, or a skip that says what is missing."""
    if not CHROMIUM.exists():
        pytest.skip(f"no Chromium at {CHROMIUM} (Debian: apt-get install chromium)")
    return pytest.importorskip("playwright.sync_api", reason="needs playwright for Python")


@contextlib.contextmanager
def _open_page(app: Any) -> Iterator[tuple[Any, list[str]]]:
    """Serves ``app``, opens its page in headless Chromium and waits for the index to load.

    Yields:
        The page, and the list that collects its script errors and console errors.
    """
    sync_api = _playwright()
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
            yield page, problems
        finally:
            browser.close()


def test_page_searches_in_a_real_browser(built: Built, tmp_path: Path) -> None:
    with _open_page(create_app(built.index)) as (page, problems):
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


def test_page_shows_a_queries_cluster_page_by_page(
    built: Built, headed: Headed, tmp_path: Path
) -> None:
    index = ImageIndex.load(built.index)
    clusters = headed.head.assign(index.embeddings)
    biggest = int(np.bincount(clusters).argmax())  # 16 images in 3 clusters: at least 6
    size = int((clusters == biggest).sum())
    query = index.items[int(np.flatnonzero(clusters == biggest)[0])]

    app = create_app(
        built.index, headed.run, limits=ServeLimits(max_k=2)
    )  # two images per cluster page
    with _open_page(app) as (page, problems):
        assert "3 clusters" in page.inner_text("#index-info")
        assert page.locator("#cluster-more").is_hidden()

        page.set_input_files("#file", str(query.path))
        page.wait_for_function(RESULTS_LOADED, arg=2, timeout=WAIT_MS)
        assert f"cluster{biggest} (p " in page.inner_text("#query-meta").replace("\n", "")
        page.click("#cluster-more")
        page.wait_for_function(
            "() => document.querySelector('#results-title').textContent.startsWith('Cluster')",
            timeout=WAIT_MS,
        )
        page.wait_for_function(RESULTS_LOADED, arg=2, timeout=WAIT_MS)
        title = page.inner_text("#results-title")
        assert title == f"Cluster {biggest}: 2 of {size} images, most probable first"
        # "Show more" appends the next page until the whole cluster is there.
        shown = 2
        while page.locator("#more").is_visible():
            page.click("#more")
            shown = min(shown + 2, size)
            page.wait_for_function(RESULTS_LOADED, arg=shown, timeout=WAIT_MS)
        captions = page.locator("#grid .caption").all_inner_texts()
        assert len(captions) == size and all("p = " in c for c in captions)
        assert page.inner_text("#results-title").startswith(f"Cluster {biggest}: {size} of")
        page.screenshot(path=str(tmp_path / "cluster.png"), full_page=True)

        # A member is a query like any result: its neighbours replace the cluster.
        page.locator("#grid .card").nth(0).click()
        page.wait_for_function(
            "() => document.querySelector('#results-title').textContent.includes('nearest')",
            timeout=WAIT_MS,
        )
        assert page.locator("#more").is_hidden()
        assert problems == []
