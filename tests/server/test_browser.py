"""The search page in a real headless Chromium: upload, results, click-through, browsing, the
address as the page's state, the full-size viewer, search by region, errors, accessibility."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

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
AXE = Path(__file__).parent / "vendor" / "axe.min.js"
"""axe-core, vendored (MPL-2.0): the accessibility check runs offline."""
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


def _shows(page: Any, action: Any, n: int) -> None:
    """Runs ``action`` and waits for the next grid it brings, with ``n`` images loaded (the
    grid before it, the collection say, may hold as many)."""
    before = page.evaluate("() => Number(document.body.dataset.shown || 0)")
    action()
    page.wait_for_function(
        "(b) => Number(document.body.dataset.shown || 0) > b", arg=before, timeout=WAIT_MS
    )
    page.wait_for_function(RESULTS_LOADED, arg=n, timeout=WAIT_MS)


def _failed_loads(problems: list[str], status: int) -> list[str]:
    """``problems`` less Chromium's own log lines of requests answered with ``status``."""
    return [p for p in problems if f"status of {status}" not in p]


@contextlib.contextmanager
def _open_page(
    app: Any, path: str = "/", *, bypass_csp: bool = False
) -> Iterator[tuple[Any, list[str]]]:
    """Serves ``app``, opens ``path`` in headless Chromium and waits for the index to load.

    ``bypass_csp`` lets a test inject a script (axe-core) the page's policy would refuse.

    Yields:
        The page (its base address in ``page.base``), and the list that collects its script
        errors and console errors.
    """
    sync_api = _playwright()
    with serve_in_thread(app) as url, sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 800}, bypass_csp=bypass_csp)
            problems: list[str] = []
            page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
            page.on(
                "console",
                lambda m: (
                    problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None
                ),
            )
            page.base = url
            page.goto(f"{url}{path}")
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
        _shows(page, lambda: page.set_input_files("#file", str(built.folder / "red" / "1.png")), 5)
        page.screenshot(path=str(tmp_path / "upload.png"), full_page=True)
        captions = page.locator("#grid .caption").all_inner_texts()
        assert len(captions) == 5
        assert "red" in captions[0] and "d = 0" in captions[0]
        assert page.locator("#query-image").is_visible()

        # The address says nothing of an upload, and the page says so.
        assert "upload=1" in page.url and "id=" not in page.url
        assert page.locator("#upload-note").is_visible()

        # Clicking a result searches with it: it becomes the query, and the address says so.
        second = page.locator("#grid .card img").nth(1).get_attribute("alt")
        page.locator("#grid .card").nth(1).click()
        page.wait_for_function(
            "(id) => document.querySelector('#query-meta')?.textContent.includes(id)",
            arg=second,
            timeout=WAIT_MS,
        )
        assert f"id={quote(second, safe='')}" in page.url and "k=5" in page.url
        page.wait_for_function(RESULTS_LOADED, arg=5, timeout=WAIT_MS)
        assert "share the query's class" in page.inner_text("#results-title")
        page.screenshot(path=str(tmp_path / "item.png"), full_page=True)

        # Random query, then an error from the API shown to the user.
        _shows(page, lambda: page.click("#random"), 5)
        not_image = tmp_path / "notes.png"
        not_image.write_text("not an image at all")
        page.set_input_files("#file", str(not_image))
        page.wait_for_selector("#error:not([hidden])", timeout=WAIT_MS)
        assert "not an image" in page.inner_text("#error")
        assert "415" in page.inner_text("#error")
        page.screenshot(path=str(tmp_path / "error.png"), full_page=True)
        # The 415 is logged by Chromium as a failed resource; nothing else may fail.
        assert _failed_loads(problems, 415) == []


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

        _shows(page, lambda: page.set_input_files("#file", str(query.path)), 2)
        assert f"cluster{biggest} (p " in page.inner_text("#query-meta").replace("\n", "")
        page.click("#cluster-more")
        page.wait_for_function(
            "() => document.querySelector('#results-title').textContent.startsWith('Cluster')",
            timeout=WAIT_MS,
        )
        page.wait_for_function(RESULTS_LOADED, arg=2, timeout=WAIT_MS)
        assert f"cluster={biggest}" in page.url
        title = page.inner_text("#results-title")
        assert title == f"Cluster {biggest}: images 1–2 of {size}, most probable first"
        # The next pages, two images each, until the whole cluster was seen.
        seen = page.locator("#grid img").evaluate_all("(imgs) => imgs.map((i) => i.alt)")
        while page.locator("#next").is_enabled():
            page.click("#next")
            page.wait_for_function(
                "(n) => document.querySelector('#results-title').textContent.includes(`${n}–`)",
                arg=len(seen) + 1,
                timeout=WAIT_MS,
            )
            page.wait_for_function(RESULTS_LOADED, arg=1, timeout=WAIT_MS)
            captions = page.locator("#grid .caption").all_inner_texts()
            assert all("p = " in c for c in captions)
            seen += page.locator("#grid img").evaluate_all("(imgs) => imgs.map((i) => i.alt)")
        assert len(seen) == len(set(seen)) == size
        assert f"page={(size + 1) // 2}" in page.url
        page.screenshot(path=str(tmp_path / "cluster.png"), full_page=True)
        # Back goes to the page before; the chips list every cluster.
        page.go_back()
        page.wait_for_function(
            "(n) => document.querySelector('#results-title').textContent.includes(`of ${n}`)",
            arg=size,
            timeout=WAIT_MS,
        )
        assert page.locator("#clusters .chip").count() == 3

        # A member is a query like any result: its neighbours replace the cluster.
        page.locator("#grid .card").nth(0).click()
        page.wait_for_function(
            "() => document.querySelector('#results-title').textContent.includes('nearest')",
            timeout=WAIT_MS,
        )
        assert page.locator("#pager").is_hidden()
        assert problems == []


def test_the_page_opens_on_the_collection_and_its_address_is_its_state(built: Built) -> None:
    app = create_app(built.index, limits=ServeLimits(max_k=5))  # five images a page
    with _open_page(app) as (page, problems):
        page.wait_for_function(RESULTS_LOADED, arg=5, timeout=WAIT_MS)
        assert page.inner_text("#results-title") == "The collection: images 1–5 of 16"
        assert page.inner_text("#page-info") == "page 1 of 4"
        first = page.locator("#grid img").evaluate_all("(imgs) => imgs.map((i) => i.alt)")
        order = [it.id for it in ImageIndex.load(built.index).items]
        assert first == order[:5]  # alt text: the file name

        page.click("#next")
        page.wait_for_function(
            "() => document.querySelector('#results-title').textContent.includes('6–10')",
            timeout=WAIT_MS,
        )
        assert page.url.endswith("?page=2")
        page.reload()  # a reload shows the same page
        page.wait_for_function(
            "() => document.querySelector('#results-title').textContent.includes('6–10')",
            timeout=WAIT_MS,
        )
        page.locator("#grid .card").nth(0).click()
        page.wait_for_function(
            "() => document.querySelector('#results-title').textContent.includes('nearest')",
            timeout=WAIT_MS,
        )
        assert f"id={quote(order[5], safe='')}" in page.url
        page.go_back()  # back to page 2 of the collection
        page.wait_for_function(
            "() => document.querySelector('#results-title').textContent.includes('6–10')",
            timeout=WAIT_MS,
        )
        page.go_forward()  # and forward to the search again
        page.wait_for_function(
            "(id) => document.querySelector('#query-meta').textContent.includes(id)",
            arg=order[5],
            timeout=WAIT_MS,
        )
        page.wait_for_function(RESULTS_LOADED, arg=5, timeout=WAIT_MS)

        # A copied link, opened afresh, shows the same search.
        link = page.url
        shown = page.locator("#grid img").evaluate_all("(imgs) => imgs.map((i) => i.alt)")
        page.goto("about:blank")
        page.goto(link)
        page.wait_for_function(RESULTS_LOADED, arg=5, timeout=WAIT_MS)
        page.wait_for_function(
            "() => document.querySelector('#status').textContent.startsWith('searched')",
            timeout=WAIT_MS,
        )
        assert page.locator("#grid img").evaluate_all("(i) => i.map((x) => x.alt)") == shown

        # Past the end: an empty page, not an error.
        page.goto(f"{page.base}/?page=99")
        page.wait_for_function(
            "() => document.querySelector('#results-title').textContent.includes('no images')",
            timeout=WAIT_MS,
        )
        assert page.locator("#grid li").count() == 0 and page.locator("#error").is_hidden()
        assert page.locator("#prev").is_enabled() and page.locator("#next").is_disabled()
        assert problems == []


def test_an_unknown_id_in_the_address_is_said_plainly(built: Built) -> None:
    with _open_page(create_app(built.index), "/?id=no/such.png") as (page, problems):
        page.wait_for_selector("#error:not([hidden])", timeout=WAIT_MS)
        assert "no item with id 'no/such.png'" in page.inner_text("#error")
        assert page.locator("#query-view").is_hidden()
        # Chromium logs the 404 answer itself as a failed load; no script error, nothing else.
        assert _failed_loads(problems, 404) == []


def test_results_show_file_names_and_no_classes_without_labels(unlabelled: Path) -> None:
    with _open_page(create_app(unlabelled), "/?id=red/1.png&k=5") as (page, problems):
        page.wait_for_function(RESULTS_LOADED, arg=5, timeout=WAIT_MS)
        info = page.inner_text("#index-info")
        assert "16 images" in info and "classes" not in info
        assert page.locator("#grid .caption .class").count() == 0
        assert page.locator(".legend").count() == 0
        captions = page.locator("#grid .caption").all_inner_texts()
        assert captions[0].startswith("#1 red/1.png") and "d = 0" in captions[0]
        assert all("20×20 px" in c for c in captions)  # the picture's size
        assert "class" not in page.inner_text("#query-meta")
        assert problems == []


def test_viewer_shows_a_result_at_full_size(built: Built) -> None:
    with _open_page(create_app(built.index), "/?id=red/1.png&k=5") as (page, problems):
        page.wait_for_function(RESULTS_LOADED, arg=5, timeout=WAIT_MS)
        ids = page.locator("#grid img").evaluate_all("(imgs) => imgs.map((i) => i.alt)")
        page.locator("#grid .view").nth(1).focus()
        page.keyboard.press("Enter")
        viewer = page.locator("#viewer")
        viewer.wait_for(state="visible", timeout=WAIT_MS)
        assert page.inner_text("#viewer-title") == ids[1]
        page.wait_for_function(
            "() => document.querySelector('#viewer-meta').textContent.includes('20×20 px')",
            timeout=WAIT_MS,
        )
        link = page.get_attribute("#viewer-open", "href")
        assert link == f"/items/{quote(ids[1])}/image"
        original = (built.folder / ids[1]).read_bytes()
        assert page.request.get(f"{page.base}{link}").body() == original
        page.keyboard.press("ArrowRight")
        assert page.inner_text("#viewer-title") == ids[2]
        page.keyboard.press("ArrowLeft")
        page.keyboard.press("ArrowLeft")
        assert page.inner_text("#viewer-title") == ids[0]
        page.keyboard.press("Escape")
        viewer.wait_for(state="hidden", timeout=WAIT_MS)
        assert problems == []


def _drag(page: Any, selector: str, start: tuple[float, float], end: tuple[float, float]) -> None:
    """Drags across an element, from and to points given as fractions of its size."""
    box = page.locator(selector).bounding_box()
    page.mouse.move(box["x"] + start[0] * box["width"], box["y"] + start[1] * box["height"])
    page.mouse.down()
    page.mouse.move(box["x"] + end[0] * box["width"], box["y"] + end[1] * box["height"], steps=4)
    page.mouse.up()


def test_a_region_drawn_on_the_query_is_searched(built: Built) -> None:
    with _open_page(create_app(built.index), "/?id=red/1.png&k=5") as (page, problems):
        page.wait_for_function(RESULTS_LOADED, arg=5, timeout=WAIT_MS)
        corner = {"x": 0, "y": 0, "width": 120, "height": 12}  # the page's header, top left
        header = page.screenshot(clip=corner)
        _drag(page, "#query-image", (0.1, 0.25), (0.6, 0.75))  # about 2,5,10,10 of 20x20
        page.wait_for_function(
            "() => document.querySelector('#results-title').textContent.includes('region')",
            timeout=WAIT_MS,
        )
        page.wait_for_function(RESULTS_LOADED, arg=5, timeout=WAIT_MS)
        region = page.input_value("#region")
        x, y, w, h = (int(v) for v in region.split(","))
        assert abs(x - 2) <= 1 and abs(y - 5) <= 1 and abs(w - 10) <= 1 and abs(h - 10) <= 1
        assert f"box={quote(region, safe='')}" in page.url
        assert page.locator("#region-box").is_visible()
        # The box dims the image around it, not the whole page.
        assert page.screenshot(clip=corner) == header
        api = page.request.get(f"{page.base}/items/red/1.png/neighbors?k=5&box={region}").json()
        shown = page.locator("#grid img").evaluate_all("(imgs) => imgs.map((i) => i.alt)")
        assert shown == [n["id"] for n in api["neighbors"]]

        # By keyboard: a region typed in, then Enter; one outside the image is refused.
        page.fill("#region", "0,0,50,50")
        page.press("#region", "Enter")
        page.wait_for_selector("#error:not([hidden])", timeout=WAIT_MS)
        assert "reaches outside the 20x20 image" in page.inner_text("#error")
        assert "422" in page.inner_text("#error")

        # An upload: the region goes with the file; the address stays without it.
        _shows(
            page, lambda: page.set_input_files("#file", str(built.folder / "green" / "3.png")), 5
        )
        page.fill("#region", "0,0,10,10")
        page.click("#region-search")
        page.wait_for_function(
            "() => document.querySelector('#results-title').textContent.includes('0,0,10,10')",
            timeout=WAIT_MS,
        )
        assert "upload=1" in page.url and "box" not in page.url
        page.click("#region-clear")
        page.wait_for_function(
            "() => !document.querySelector('#results-title').textContent.includes('region')",
            timeout=WAIT_MS,
        )
        assert _failed_loads(problems, 422) == []


def _axe(page: Any) -> list[str]:
    """Serious and critical accessibility violations axe-core finds on the page as it is."""
    if not page.evaluate("() => typeof axe !== 'undefined'"):
        page.add_script_tag(path=str(AXE))
    found = page.evaluate(
        "async () => (await axe.run(document, {resultTypes: ['violations']})).violations"
    )
    return [
        f"{v['id']} ({v['impact']}): {v['help']} at {[n['target'] for n in v['nodes']][:3]}"
        for v in found
        if v["impact"] in ("serious", "critical")
    ]


def test_the_page_passes_axe_and_works_by_keyboard(built: Built, headed: Headed) -> None:
    app = create_app(built.index, headed.run)
    with _open_page(app, "/?k=5", bypass_csp=True) as (page, problems):
        page.wait_for_function(RESULTS_LOADED, arg=5, timeout=WAIT_MS)
        page.wait_for_selector("#clusters:not([hidden])", timeout=WAIT_MS)
        assert _axe(page) == []  # browsing, with the clusters
        page.emulate_media(color_scheme="dark")
        assert _axe(page) == []  # the dark scheme's colours too
        page.emulate_media(color_scheme="light")

        # By keyboard alone: Tab to the first result and search with it.
        for _ in range(60):
            page.keyboard.press("Tab")
            if page.evaluate("() => document.activeElement.classList.contains('card')"):
                break
        else:
            pytest.fail("Tab never reached a result")
        page.keyboard.press("Enter")
        page.wait_for_function(
            "() => document.querySelector('#results-title').textContent.includes('nearest')",
            timeout=WAIT_MS,
        )
        page.wait_for_function(RESULTS_LOADED, arg=5, timeout=WAIT_MS)
        assert "id=" in page.url
        assert _axe(page) == []  # a search, with its query image and region controls
        alts = page.locator("img:visible").evaluate_all("(imgs) => imgs.map((i) => i.alt)")
        assert len(alts) == 6 and all(alts)  # the query and its 5 results, named

        page.locator("#grid .view").first.focus()
        page.keyboard.press("Enter")
        page.locator("#viewer").wait_for(state="visible", timeout=WAIT_MS)
        assert _axe(page) == []  # the viewer
        page.keyboard.press("Escape")
        assert problems == []
        # The check can fail: an image without alt text is a critical violation.
        page.evaluate("() => document.querySelector('#grid').append(new Image(4, 4))")
        assert any(v.startswith("image-alt (critical)") for v in _axe(page))
