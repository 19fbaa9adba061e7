"""The search server's routes through FastAPI's TestClient, on the tiny index of conftest."""

from __future__ import annotations

import io
import json
import shutil
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from latentsearch.data import DataSplits, load_data
from latentsearch.index import (
    FingerprintMismatch,
    ImageIndex,
    IndexFormatError,
    all_images,
)
from latentsearch.runs import Run, RunError
from latentsearch.server.app import create_app
from latentsearch.server.limits import ServeLimits
from latentsearch.server.middleware import UploadLimit

if TYPE_CHECKING:
    from conftest import Built

N_ITEMS = 16
"""Images in the fixture folder: 3 classes x 5, plus blue/shade/image."""


@pytest.fixture(scope="module")
def client(built: Built) -> Iterator[TestClient]:
    """A client of the app over the fixture index, default limits."""
    with TestClient(create_app(built.index)) as c:
        yield c


@pytest.fixture(scope="module")
def strict(built: Built) -> Iterator[TestClient]:
    """A client of an app with tiny limits: 2,000 bytes, 100 pixels, k <= 5."""
    app = create_app(
        built.index, limits=ServeLimits(max_upload_bytes=2_000, max_pixels=100, max_k=5)
    )
    with TestClient(app) as c:
        yield c


def _upload(client: TestClient, content: bytes, name: str = "q.png", **kwargs: Any) -> Any:
    """POSTs ``content`` as the ``image`` file to /search; ``kwargs`` go to the client."""
    return client.post("/search", files={"image": (name, content, "image/png")}, **kwargs)


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _png_claiming(width: int, height: int) -> bytes:
    """A small PNG file whose header claims ``width`` x ``height`` (its pixel data is bogus)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", ihdr)
        + _png_chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + _png_chunk(b"IEND", b"")
    )


def _assert_problem(response: Any, status: int, *words: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    detail = response.json()["detail"]
    assert isinstance(detail, str) and detail
    for word in words:
        assert word in detail, detail


# ---------------------------------------------------------------------------- searching
def test_upload_finds_its_own_file_first(client: TestClient, built: Built) -> None:
    data = (built.folder / "red" / "1.png").read_bytes()
    r = _upload(client, data, data={"k": "4"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["query"] == {
        "kind": "upload",
        "filename": "q.png",
        "content_type": "image/png",
        "bytes": len(data),
        "format": "PNG",
        "width": 20,
        "height": 20,
        "box": None,
        # The fixture's run has no cluster head (tests/server/test_served_clusters.py has one).
        "cluster": None,
        "cluster_probability": None,
        "cluster_url": None,
    }
    assert body["k"] == 4
    neighbors = body["neighbors"]
    assert [n["rank"] for n in neighbors] == [1, 2, 3, 4]
    first = neighbors[0]
    assert first["id"] == "red/1.png"
    assert first["class_name"] == "red" and first["label"] == 2
    assert first["distance"] == pytest.approx(0.0, abs=1e-6)
    assert first["image_url"] == "/items/red/1.png/image"
    assert first["item_url"] == "/items/red/1.png"
    distances = [n["distance"] for n in neighbors]
    assert distances == sorted(distances)
    # The other red images are nearer than any other colour.
    assert {n["class_name"] for n in neighbors} == {"red"}


def test_k_from_query_default_and_capped(client: TestClient, built: Built) -> None:
    data = (built.folder / "green" / "0.png").read_bytes()
    assert len(_upload(client, data, params={"k": 3}).json()["neighbors"]) == 3
    assert len(_upload(client, data).json()["neighbors"]) == 10
    # Form field wins over the query parameter.
    assert len(_upload(client, data, params={"k": 3}, data={"k": "2"}).json()["neighbors"]) == 2
    # More than the index holds: everything, once.
    body = _upload(client, data, data={"k": "50"}).json()
    assert body["k"] == 50
    assert len(body["neighbors"]) == N_ITEMS
    assert len({n["id"] for n in body["neighbors"]}) == N_ITEMS


def test_jpeg_query_is_decoded_like_the_index(client: TestClient, built: Built) -> None:
    data = (built.folder / "blue" / "2.jpg").read_bytes()
    r = client.post("/search", files={"image": ("x.jpg", data, "image/jpeg")}, data={"k": "1"})
    assert r.status_code == 200
    assert r.json()["query"]["format"] == "JPEG"
    assert r.json()["neighbors"][0]["id"] == "blue/2.jpg"


@pytest.mark.parametrize("k", ["0", "-1", "101", "abc", "2.5"])
def test_bad_k_is_422(client: TestClient, built: Built, k: str) -> None:
    data = (built.folder / "red" / "0.png").read_bytes()
    _assert_problem(_upload(client, data, data={"k": k}), 422, "k")
    _assert_problem(_upload(client, data, params={"k": k}), 422, "k")
    _assert_problem(client.get("/items/red/0.png/neighbors", params={"k": k}), 422, "k")
    _assert_problem(client.get("/random", params={"k": k}), 422, "k")


def test_empty_k_form_field_means_the_default(client: TestClient, built: Built) -> None:
    """An HTML form sends an empty field for an unset input: that is no ``k``, not a bad one."""
    data = (built.folder / "red" / "0.png").read_bytes()
    assert _upload(client, data, data={"k": ""}).json()["k"] == 10


def test_max_k_is_the_servers(strict: TestClient) -> None:
    r = strict.get("/random", params={"k": 6})
    _assert_problem(r, 422, "k", "5")
    assert len(strict.get("/random", params={"k": 5}).json()["neighbors"]) == 5
    assert strict.get("/random").json()["k"] == 5  # the default is capped at max_k


# ---------------------------------------------------------------------------- bad uploads
def test_non_image_is_415(client: TestClient) -> None:
    _assert_problem(_upload(client, b"hello, I am text\n" * 10), 415, "not an image")


def test_corrupt_image_is_422(client: TestClient, built: Built) -> None:
    _assert_problem(_upload(client, _png_claiming(20, 20)), 422, "cannot decode")
    data = (built.folder / "red" / "2.jpg").read_bytes()
    _assert_problem(_upload(client, data[:200], name="cut.jpg"), 422)


def test_empty_upload_is_422(client: TestClient) -> None:
    _assert_problem(_upload(client, b""), 422, "empty")


def test_missing_image_field_is_422(client: TestClient) -> None:
    _assert_problem(client.post("/search", data={"k": "3"}), 422, "image")
    _assert_problem(client.post("/search", data={"image": "not a file"}), 422, "image")


def test_malformed_multipart_is_a_4xx(client: TestClient) -> None:
    headers = {"content-type": "multipart/form-data; boundary=nothing-matches"}
    r = client.post("/search", content=b"--garbage\r\n\r\n\x00\xff", headers=headers)
    assert 400 <= r.status_code < 500
    assert isinstance(r.json()["detail"], str)
    r = client.post("/search", json={"image": "aGVsbG8="})
    _assert_problem(r, 422, "image")


def test_oversized_upload_is_413(strict: TestClient) -> None:
    _assert_problem(_upload(strict, b"\x89PNG" + bytes(2_100)), 413, "too large", "2,000")
    # A body far over the limit is refused from its Content-Length, unread.
    _assert_problem(_upload(strict, bytes(200_000)), 413, "too large")


def test_too_many_pixels_is_413(strict: TestClient, client: TestClient, built: Built) -> None:
    data = (built.folder / "red" / "0.png").read_bytes()  # 20 x 20 = 400 > 100
    _assert_problem(_upload(strict, data), 413, "400 pixels", "100")
    # Default limit (40 M) and Pillow's own bomb limit, both checked from the header alone.
    _assert_problem(_upload(client, _png_claiming(7_000, 7_000)), 413, "49,000,000 pixels")
    _assert_problem(_upload(client, _png_claiming(30_000, 30_000)), 413, "too large")


async def _drain(scope: Any, receive: Any, send: Any) -> None:
    while True:
        message = await receive()
        if not message.get("more_body"):
            return


def test_upload_limit_stops_reading_a_chunked_body() -> None:
    """Without Content-Length the body is counted as it arrives and reading stops early."""
    import anyio
    from fastapi import HTTPException

    chunks = [b"x" * 400] * 100
    served: list[int] = []

    async def receive() -> dict[str, Any]:
        served.append(1)
        return {"type": "http.request", "body": chunks[len(served) - 1], "more_body": True}

    async def send(message: Any) -> None:
        raise AssertionError("nothing is sent: the app's exception handler answers")

    scope = {"type": "http", "method": "POST", "path": "/search", "headers": []}
    limit = UploadLimit(_drain, max_body_size=1_000, message="too big")
    with pytest.raises(HTTPException) as info:
        anyio.run(limit, scope, receive, send)
    assert info.value.status_code == 413
    assert len(served) == 3  # 1,200 bytes read: the first chunk over 1,000 stops it


def test_chunked_upload_over_the_limit_is_413(strict: TestClient) -> None:
    boundary = "latentsearch-test"
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="image"; '
        'filename="big.png"\r\nContent-Type: image/png\r\n\r\n'
    ).encode()
    tail = f"\r\n--{boundary}--\r\n".encode()

    def body() -> Iterator[bytes]:
        yield head
        for _ in range(100):
            yield bytes(10_000)
        yield tail

    r = strict.post(
        "/search",
        content=body(),
        headers={"content-type": f"multipart/form-data; boundary={boundary}"},
    )
    _assert_problem(r, 413, "too large")


# ---------------------------------------------------------------------------- items
def test_item_metadata_hides_absolute_paths(client: TestClient, built: Built) -> None:
    r = client.get("/items/green/3.png")
    assert r.status_code == 200
    body = r.json()
    assert body["id"] == "green/3.png"
    assert body["label"] == 1 and body["class_name"] == "green"
    assert body["filename"] == "3.png"
    assert len(body["sha256"]) == 64
    assert body["image_url"] == "/items/green/3.png/image"
    assert body["neighbors_url"] == "/items/green/3.png/neighbors"
    assert str(built.folder) not in r.text


@pytest.mark.parametrize(
    ("item_id", "content_type"), [("red/0.png", "image/png"), ("green/2.jpg", "image/jpeg")]
)
def test_item_image_is_the_file(
    client: TestClient, built: Built, item_id: str, content_type: str
) -> None:
    r = client.get(f"/items/{item_id}/image")
    assert r.status_code == 200
    assert r.content == (built.folder / item_id).read_bytes()
    assert r.headers["content-type"] == content_type
    assert r.headers["x-content-type-options"] == "nosniff"


def test_id_ending_like_a_route_is_still_reachable(client: TestClient, built: Built) -> None:
    """``blue/shade/image`` is an id: its metadata, image and neighbours all resolve."""
    meta = client.get("/items/blue/shade/image")
    assert meta.status_code == 200
    assert meta.json()["id"] == "blue/shade/image"
    image = client.get(meta.json()["image_url"])
    assert image.content == (built.folder / "blue" / "shade" / "image").read_bytes()
    assert image.headers["content-type"] == "image/png"  # from the content, not the name
    near = client.get(meta.json()["neighbors_url"], params={"k": 1}).json()
    assert near["neighbors"][0]["id"] == "blue/shade/image"


@pytest.mark.parametrize("suffix", ["", "/image", "/neighbors"])
def test_unknown_id_is_404(client: TestClient, suffix: str) -> None:
    _assert_problem(client.get(f"/items/red/99.png{suffix}"), 404, "red/99.png")


def test_unknown_id_search_is_404(client: TestClient) -> None:
    _assert_problem(client.post("/search/red/99.png"), 404, "red/99.png")


@pytest.mark.parametrize(
    "raw_path",
    [
        "/items/../../etc/passwd/image",
        "/items/%2e%2e/%2e%2e/%2e%2e/etc/passwd/image",
        "/items/%2E%2E%2F%2E%2E%2Fetc%2Fpasswd/image",
        "/items/red/..%2F..%2F..%2F..%2Fetc%2Fpasswd/image",
        "/items//etc/passwd/image",
        "/items//etc/passwd",
        "/items/%2Fetc%2Fpasswd/image",
        "/items/red/%00/image",
        "/items/~/.ssh/id_rsa/image",
        "/static/../app.py",
        "/static/%2e%2e/app.py",
    ],
)
def test_path_like_ids_are_404(client: TestClient, raw_path: str) -> None:
    r = client.get(raw_path)
    assert r.status_code == 404, (raw_path, r.status_code)
    assert "root:" not in r.text and "import" not in r.text


def test_absolute_path_of_an_indexed_file_is_not_an_id(client: TestClient, built: Built) -> None:
    absolute = (built.folder / "red" / "0.png").resolve()
    _assert_problem(client.get(f"/items/{absolute}/image"), 404, "no item")


def test_search_by_id(client: TestClient) -> None:
    a = client.get("/items/blue/3.png/neighbors", params={"k": 3})
    b = client.post("/search/blue/3.png", params={"k": 3})
    assert a.status_code == b.status_code == 200
    body = a.json()
    assert body["query"]["kind"] == "item"
    assert body["query"]["id"] == "blue/3.png"
    assert body["query"]["class_name"] == "blue"
    assert body["neighbors"][0]["id"] == "blue/3.png"
    assert body["neighbors"][0]["distance"] == pytest.approx(0.0, abs=1e-6)
    assert [n["id"] for n in body["neighbors"]] == [n["id"] for n in b.json()["neighbors"]]


def test_search_by_id_matches_upload_of_the_same_file(client: TestClient, built: Built) -> None:
    by_id = client.get("/items/green/4.png/neighbors", params={"k": 6}).json()["neighbors"]
    data = (built.folder / "green" / "4.png").read_bytes()
    uploaded = _upload(client, data, data={"k": "6"}).json()["neighbors"]
    assert [n["id"] for n in by_id] == [n["id"] for n in uploaded]


def test_random(client: TestClient) -> None:
    seen = set()
    for _ in range(5):
        r = client.get("/random", params={"k": 2})
        assert r.status_code == 200
        body = r.json()
        assert body["query"]["kind"] == "item"
        assert body["neighbors"][0]["id"] == body["query"]["id"]
        assert len(body["neighbors"]) == 2
        seen.add(body["query"]["id"])
    assert all(client.get(f"/items/{i}").status_code == 200 for i in seen)


def test_health(client: TestClient) -> None:
    body = client.get("/health").json()
    assert body["status"] == "ok"
    assert body["items"] == N_ITEMS
    assert body["model"] == "seed-ae"
    assert (body["image_size"], body["channels"]) == (16, 3)
    assert body["class_names"] == ["blue", "green", "red"] and body["labelled"] is True
    assert body["index_type"] == "flat"
    assert (body["default_k"], body["max_k"]) == (10, 100)
    assert body["max_upload_bytes"] == 10 * 1024 * 1024


# ---------------------------------------------------------------------------- labels
def test_an_index_without_labels_shows_no_classes(unlabelled: Path) -> None:
    client = TestClient(create_app(unlabelled))
    health = client.get("/health").json()
    assert health["labelled"] is False and health["class_names"] == []
    body = client.get("/items/red/1.png/neighbors", params={"k": 3}).json()
    assert body["query"]["class_name"] is None and body["query"]["label"] == -1
    for n in body["neighbors"]:
        assert n["class_name"] is None and n["label"] == -1
    assert body["neighbors"][0]["filename"] == "1.png"  # the file names it instead
    page = client.get("/items", params={"limit": 100}).json()
    assert {it["class_name"] for it in page["items"]} == {None}


def test_results_carry_their_file_name(client: TestClient) -> None:
    body = client.get("/items/blue/shade/image/neighbors", params={"k": 1}).json()
    assert body["neighbors"][0]["filename"] == "image"
    assert body["neighbors"][0]["class_name"] == "blue"  # labelled: classes are shown


# ---------------------------------------------------------------------------- browsing
def test_items_are_paged_in_index_order(client: TestClient, built: Built) -> None:
    order = [it.id for it in ImageIndex.load(built.index).items]
    first = client.get("/items", params={"limit": 5}).json()
    assert (first["total"], first["offset"], first["limit"]) == (N_ITEMS, 0, 5)
    assert [it["id"] for it in first["items"]] == order[:5]
    assert first["items"][0]["image_url"].endswith("/image")
    seen, url = [], "/items?limit=5"
    while url:
        page = client.get(url).json()
        seen += [it["id"] for it in page["items"]]
        url = page["next_url"]
    assert seen == order
    assert len(client.get("/items").json()["items"]) == N_ITEMS  # default page: 50


def test_items_offset_past_the_end_is_an_empty_page(client: TestClient) -> None:
    for offset in (N_ITEMS, N_ITEMS + 1, 10**12):
        r = client.get("/items", params={"offset": offset})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["items"] == [] and body["next_url"] is None and body["total"] == N_ITEMS


@pytest.mark.parametrize(("params", "word"), [({"offset": -1}, "offset"), ({"limit": 0}, "limit")])
def test_bad_items_paging_is_422(client: TestClient, params: dict[str, int], word: str) -> None:
    _assert_problem(client.get("/items", params=params), 422, word)


def test_items_page_is_at_most_max_k(strict: TestClient) -> None:
    _assert_problem(strict.get("/items", params={"limit": 6}), 422, "at most 5")
    assert len(strict.get("/items").json()["items"]) == 5


# ---------------------------------------------------------------------------- search by region
def test_box_of_the_whole_upload_is_the_whole_image(client: TestClient, built: Built) -> None:
    data = (built.folder / "red" / "1.png").read_bytes()
    whole = _upload(client, data, data={"k": "5"}).json()
    boxed = _upload(client, data, data={"k": "5", "box": "0,0,20,20"}).json()
    assert boxed["query"]["box"] == [0, 0, 20, 20]
    assert [n["id"] for n in boxed["neighbors"]] == [n["id"] for n in whole["neighbors"]]


def test_box_crops_the_upload_before_embedding(client: TestClient, built: Built) -> None:
    path = built.folder / "red" / "1.png"
    boxed = _upload(client, path.read_bytes(), params={"box": "2,3,10,8"}, data={"k": "3"})
    assert boxed.status_code == 200, boxed.text
    assert boxed.json()["query"]["box"] == [2, 3, 10, 8]
    part = Image.open(path).crop((2, 3, 12, 11))
    buf = io.BytesIO()
    part.save(buf, format="PNG")
    cut = _upload(client, buf.getvalue(), data={"k": "3"}).json()["neighbors"]
    got = boxed.json()["neighbors"]
    assert [n["id"] for n in got] == [n["id"] for n in cut]
    assert [n["distance"] for n in got] == pytest.approx([n["distance"] for n in cut], abs=1e-5)
    assert got[0]["distance"] > 1e-6  # a part of red/1.png is not red/1.png


def test_box_of_an_indexed_image_is_cut_from_its_file(client: TestClient, built: Built) -> None:
    by_id = client.post("/search/green/2.jpg", params={"k": 4, "box": "4,4,12,12"})
    assert by_id.status_code == 200, by_id.text
    assert by_id.json()["query"]["id"] == "green/2.jpg"
    assert by_id.json()["query"]["box"] == [4, 4, 12, 12]
    data = (built.folder / "green" / "2.jpg").read_bytes()
    upload = _upload(client, data, data={"k": "4", "box": "4,4,12,12"}).json()["neighbors"]
    got = by_id.json()["neighbors"]
    assert [n["id"] for n in got] == [n["id"] for n in upload]
    assert [n["distance"] for n in got] == pytest.approx([n["distance"] for n in upload], abs=1e-5)
    neighbors = client.get("/items/green/2.jpg/neighbors", params={"k": 4, "box": "4,4,12,12"})
    assert [n["id"] for n in neighbors.json()["neighbors"]] == [n["id"] for n in got]
    # Without a box: the stored embedding, the image itself first.
    assert client.post("/search/green/2.jpg").json()["neighbors"][0]["distance"] < 1e-6


@pytest.mark.parametrize(
    ("box", "words"),
    [
        ("0,0,21,20", ("reaches outside", "20x20")),
        ("15,15,6,1", ("reaches outside",)),
        ("0,0,0,5", ("at least 1 pixel",)),
        ("0,0,5,-2", ("at least 1 pixel",)),
        ("-1,0,5,5", ("0 or more",)),
        ("1,2,3", ("four integers",)),
        ("a,b,c,d", ("four integers",)),
        ("1.5,0,4,4", ("four integers",)),
    ],
)
def test_bad_box_is_422(client: TestClient, built: Built, box: str, words: tuple[str, ...]) -> None:
    data = (built.folder / "red" / "1.png").read_bytes()
    _assert_problem(_upload(client, data, data={"box": box}), 422, "box", *words)
    _assert_problem(client.post("/search/red/1.png", params={"box": box}), 422, "box", *words)


def test_box_of_an_unknown_id_is_404(client: TestClient) -> None:
    _assert_problem(client.post("/search/no/such.png", params={"box": "0,0,2,2"}), 404, "no item")


def test_box_of_a_file_changed_since_indexing_is_404(own: tuple[Path, Path]) -> None:
    folder, index = own
    client = TestClient(create_app(index))
    Image.new("RGB", (20, 20), (0, 0, 0)).save(folder / "red" / "1.png")
    r = client.post("/search/red/1.png", params={"box": "0,0,4,4"})
    _assert_problem(r, 404, "changed since it was indexed")


# ---------------------------------------------------------------------------- page and docs
def test_page_and_its_files(client: TestClient) -> None:
    r = client.get("/")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/html")
    assert "default-src 'self'" in r.headers["content-security-policy"]
    html = r.text
    assert 'type="file"' in html and 'src="static/app.js"' in html
    assert "http://" not in html and "https://" not in html  # nothing from elsewhere
    for name, kind in (("app.js", "javascript"), ("style.css", "text/css")):
        asset = client.get(f"/static/{name}")
        assert asset.status_code == 200
        assert kind in asset.headers["content-type"]
        assert "http://" not in asset.text and "https://" not in asset.text


def test_docs_and_openapi(client: TestClient) -> None:
    assert client.get("/docs").status_code == 200
    spec = client.get("/openapi.json").json()
    paths = spec["paths"]
    for path in (
        "/search",
        "/search/{item_id}",
        "/items/{item_id}",
        "/items/{item_id}/image",
        "/items/{item_id}/neighbors",
        "/random",
        "/health",
    ):
        assert path in paths, sorted(paths)
    form = spec["components"]["schemas"]
    assert any("image" in s.get("properties", {}) for s in form.values())


def test_unknown_route_is_json_404(client: TestClient) -> None:
    _assert_problem(client.get("/nope"), 404, "/docs")
    r = client.delete("/items/red/0.png")
    assert r.status_code == 405


# ---------------------------------------------------------------------------- start-up
def test_mismatched_run_is_refused_at_start_up(built: Built) -> None:
    with pytest.raises(FingerprintMismatch, match="not the run that built this index"):
        create_app(built.index, built.other_run)


def test_explicit_run_is_accepted(built: Built) -> None:
    app = create_app(built.index, built.run)
    assert app.state.service.run.path == built.run


def test_missing_index_is_refused(tmp_path: Path) -> None:
    with pytest.raises(IndexFormatError, match="no index"):
        create_app(tmp_path / "nothing.index")


def test_moved_run_is_refused_with_a_hint(built: Built, tmp_path: Path) -> None:
    copy = tmp_path / "copy.index"
    shutil.copytree(built.index, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["run"] = str(tmp_path / "gone")
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(RunError, match="run_path"):
        create_app(copy)
    assert create_app(copy, built.run).state.service.run.path == built.run


@pytest.mark.parametrize("limit", ["max_upload_bytes", "max_pixels", "max_k"])
def test_limits_must_be_positive(built: Built, limit: str) -> None:
    with pytest.raises(ValueError, match=limit):
        create_app(built.index, limits=ServeLimits(**{limit: 0}))


# ---------------------------------------------------------------------------- array sources
@pytest.fixture(scope="module")
def digits_index(
    tmp_path_factory: pytest.TempPathFactory, tiny_run: Run, digits: DataSplits
) -> tuple[Path, Path]:
    """Indexes of 30 digits by the session's tiny digits run (8 px grey), one recording the
    spec 'digits' and one recording none."""
    root = tmp_path_factory.mktemp("server-digits")
    run = tiny_run
    subset = all_images(digits).subset(np.arange(30))
    ImageIndex.build(run, subset, data_spec="digits").save(root / "with-spec.index")
    ImageIndex.build(run, subset).save(root / "no-spec.index")
    return root / "with-spec.index", root / "no-spec.index"


def test_array_source_images_are_rendered(digits_index: tuple[Path, Path]) -> None:
    with_spec, no_spec = digits_index
    client = TestClient(create_app(with_spec))
    item = client.get("/random").json()["query"]
    assert item["filename"] is None and item["sha256"] is None
    r = client.get(item["image_url"])
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    data = all_images(load_data("digits"))
    expected = data.pixels[data.ids.index(item["id"])][:, :, 0]
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(r.content))), expected)

    bare = TestClient(create_app(no_spec))
    _assert_problem(bare.get(item["image_url"]), 404, "no image file")


# ---------------------------------------------------------------------------- served files
@pytest.fixture
def own(built: Built, tmp_path: Path) -> tuple[Path, Path]:
    """A private copy of the fixture folder (free to modify) and an index of it, same run.

    Beside the fixture's files: ``odd/x.html`` (a PNG), ``odd/scan.tif`` (a TIFF) and
    ``odd/two\\nlines.png`` (an id with a newline).
    """
    folder = tmp_path / "images"
    shutil.copytree(built.folder, folder)
    (folder / "odd").mkdir()
    Image.new("RGB", (20, 20), (1, 2, 3)).save(folder / "odd" / "x.html", format="PNG")
    Image.new("RGB", (30, 20), (9, 99, 199)).save(folder / "odd" / "scan.tif", format="TIFF")
    Image.new("RGB", (20, 20), (7, 7, 7)).save(folder / "odd" / "two\nlines.png")
    from latentsearch.runs import load_run

    run = load_run(built.run)
    data = all_images(load_data(str(folder), image_size=16, cache_dir=tmp_path / "cache"))
    ImageIndex.build(run, data).save(tmp_path / "own.index")
    return folder, tmp_path / "own.index"


def test_served_image_has_a_fixed_type_and_protective_headers(own: tuple[Path, Path]) -> None:
    folder, index = own
    client = TestClient(create_app(index))
    r = client.get("/items/odd/x.html/image")
    assert r.status_code == 200
    assert r.headers["content-type"] == "image/png"  # from the bytes, not ".html"
    assert r.headers["x-content-type-options"] == "nosniff"
    assert "sandbox" in r.headers["content-security-policy"]
    assert "default-src 'none'" in r.headers["content-security-policy"]
    assert r.content == (folder / "odd" / "x.html").read_bytes()


def test_file_overwritten_after_indexing_is_not_served(own: tuple[Path, Path]) -> None:
    folder, index = own
    client = TestClient(create_app(index))
    (folder / "odd" / "x.html").write_text("<script>alert(1)</script>")
    r = client.get("/items/odd/x.html/image")
    _assert_problem(r, 404, "changed since it was indexed", "--update")
    assert "<script>" not in r.text


def test_path_replaced_by_a_symlink_is_not_followed(own: tuple[Path, Path], tmp_path: Path) -> None:
    folder, index = own
    secret = tmp_path / "secret.txt"
    secret.write_text("top secret")
    target = folder / "red" / "0.png"
    target.unlink()
    target.symlink_to(secret)
    client = TestClient(create_app(index))
    r = client.get("/items/red/0.png/image")
    _assert_problem(r, 404, "changed since it was indexed")
    assert "top secret" not in r.text
    # A link to another folder is not a file at all.
    target.unlink()
    target.symlink_to(tmp_path)
    _assert_problem(client.get("/items/red/0.png/image"), 404, "gone")


def test_formats_browsers_do_not_show_are_reencoded(own: tuple[Path, Path]) -> None:
    _, index = own
    r = TestClient(create_app(index)).get("/items/odd/scan.tif/image")
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    with Image.open(io.BytesIO(r.content)) as img:
        assert img.format == "PNG" and img.size == (30, 20)
        assert img.convert("RGB").getpixel((0, 0)) == (9, 99, 199)


def test_ids_with_newlines_are_reachable(own: tuple[Path, Path]) -> None:
    _, index = own
    client = TestClient(create_app(index))
    meta = client.get("/items/odd/two%0Alines.png")
    assert meta.status_code == 200, meta.text
    assert meta.json()["id"] == "odd/two\nlines.png"
    assert meta.json()["image_url"] == "/items/odd/two%0Alines.png/image"
    assert client.get(meta.json()["image_url"]).status_code == 200
    near = client.get(meta.json()["neighbors_url"], params={"k": 1}).json()
    assert near["neighbors"][0]["id"] == "odd/two\nlines.png"


# ---------------------------------------------------------------------------- hosts, docs
def test_host_header_allow_list(built: Built) -> None:
    app = create_app(built.index, allowed_hosts=["localhost", "127.0.0.1", "::1"])
    for host in ("localhost", "localhost:8000", "127.0.0.1:1234", "[::1]:8000", "LOCALHOST"):
        assert TestClient(app).get("/health", headers={"host": host}).status_code == 200, host
    for host in ("evil.example", "localhost.evil.example:8000", "127.0.0.2", ""):
        r = TestClient(app).get("/health", headers={"host": host})
        _assert_problem(r, 400, "not allowed")
    wild = create_app(built.index, allowed_hosts=["*.example.org"])
    assert TestClient(wild).get("/health", headers={"host": "a.example.org"}).status_code == 200
    assert TestClient(wild).get("/health", headers={"host": "example.com"}).status_code == 400
    with pytest.raises(ValueError, match="allowed_hosts"):
        create_app(built.index, allowed_hosts=[])


def test_docs_need_nothing_from_the_internet(client: TestClient) -> None:
    for page in ("/docs", "/redoc"):
        html = client.get(page).text
        assert "cdn." not in html and "fonts.googleapis" not in html, page
        scripts = [part.split('"')[0] for part in html.split('src="')[1:]]
        assert scripts, page
        for src in scripts:
            r = client.get(src)
            assert r.status_code == 200 and len(r.content) > 10_000, src
    assert client.get("/docs-assets/swagger-ui.css").status_code == 200


def test_concurrent_decodes_are_bounded(built: Built, monkeypatch: pytest.MonkeyPatch) -> None:
    import threading
    import time

    from latentsearch import searcher as searcher_module

    active = peak = 0
    lock = threading.Lock()
    real = searcher_module.read_image

    def slow(*args: Any, **kwargs: Any) -> np.ndarray:
        nonlocal active, peak
        with lock:
            active += 1
            peak = max(peak, active)
        time.sleep(0.05)
        with lock:
            active -= 1
        return real(*args, **kwargs)

    monkeypatch.setattr(searcher_module, "read_image", slow)
    client = TestClient(create_app(built.index, limits=ServeLimits(max_decodes=2)))
    data = (built.folder / "red" / "0.png").read_bytes()
    threads = [threading.Thread(target=_upload, args=(client, data)) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert 1 <= peak <= 2
