"""The server's clusters: the groups of the run's SCAN head, on the tiny index of conftest."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient

from latentsearch.clusters import ClusterHead, head_path
from latentsearch.index import ImageIndex
from latentsearch.server.app import create_app
from latentsearch.server.clusters import ServedClusters
from latentsearch.server.limits import ServeLimits

if TYPE_CHECKING:
    from conftest import Built, Headed

N_CLUSTERS = 3
"""The clusters of conftest's head."""


@pytest.fixture(scope="module")
def client(built: Built, headed: Headed) -> Iterator[TestClient]:
    with TestClient(create_app(built.index, headed.run, limits=ServeLimits(max_k=5))) as c:
        yield c


def _expected(built: Built, head: ClusterHead) -> tuple[ImageIndex, np.ndarray, np.ndarray]:
    """The index, and the head's cluster and probability of each of its items."""
    index = ImageIndex.load(built.index)
    prob = head.probabilities(index.embeddings)
    return index, prob.argmax(axis=1), prob.max(axis=1)


def test_items_and_neighbours_carry_the_heads_cluster(
    client: TestClient, built: Built, headed: Headed
) -> None:
    index, clusters, prob = _expected(built, headed.head)
    for position, item in enumerate(index.items):
        body = client.get(f"/items/{item.id}").json()
        assert body["cluster"] == clusters[position]
        assert body["cluster_probability"] == pytest.approx(prob[position], abs=1e-4)
        assert body["cluster_url"] == f"/clusters/{clusters[position]}"
    result = client.get("/items/red/1.png/neighbors", params={"k": 5}).json()
    assert result["query"]["cluster"] == clusters[index.position("red/1.png")]
    for n in result["neighbors"]:
        assert n["cluster"] == clusters[index.position(n["id"])]


def test_an_uploaded_image_gets_the_cluster_of_the_same_indexed_file(
    client: TestClient, built: Built, headed: Headed
) -> None:
    index, clusters, prob = _expected(built, headed.head)
    data = (built.folder / "green" / "3.png").read_bytes()
    files = {"image": ("q.png", data, "image/png")}
    query = client.post("/search", files=files).json()["query"]
    at = index.position("green/3.png")
    assert query["cluster"] == clusters[at]
    assert query["cluster_probability"] == pytest.approx(prob[at], abs=1e-4)
    assert query["cluster_url"] == f"/clusters/{clusters[at]}"


def test_cluster_list_and_pages_cover_every_image_once_most_probable_first(
    client: TestClient, built: Built, headed: Headed
) -> None:
    index, clusters, _ = _expected(built, headed.head)
    listed = client.get("/clusters").json()
    assert listed["items"] == len(index)
    sizes = [c["size"] for c in listed["clusters"]]
    assert sizes == np.bincount(clusters, minlength=N_CLUSTERS).tolist()
    assert [c["url"] for c in listed["clusters"]] == [f"/clusters/{c}" for c in range(3)]
    seen: list[str] = []
    for c in range(N_CLUSTERS):
        url: str | None = f"/clusters/{c}?limit=2"
        probabilities: list[float] = []
        while url is not None:
            page = client.get(url).json()
            assert page["cluster"] == c and page["size"] == sizes[c]
            assert len(page["items"]) <= 2
            assert all(item["cluster"] == c for item in page["items"])
            probabilities += [item["cluster_probability"] for item in page["items"]]
            seen += [item["id"] for item in page["items"]]
            url = page["next_url"]
        assert len(probabilities) == sizes[c]
        assert probabilities == sorted(probabilities, reverse=True)
    assert sorted(seen) == sorted(it.id for it in index.items)


def test_cluster_paging_defaults_and_limits(client: TestClient) -> None:
    body = client.get("/clusters/0").json()  # default page: 50, capped at max_k (5 here)
    assert len(body["items"]) == min(5, body["size"]) and body["offset"] == 0
    past = client.get("/clusters/0", params={"offset": 10_000}).json()
    assert past["items"] == [] and past["next_url"] is None
    r = client.get("/clusters/7")
    assert r.status_code == 404 and "the head has 3 (0 to 2)" in r.json()["detail"]
    r = client.get("/clusters/0", params={"limit": 6})
    assert r.status_code == 422 and "at most 5 images" in r.json()["detail"]
    for params in ({"limit": 0}, {"offset": -1}, {"limit": "x"}):
        assert client.get("/clusters/0", params=params).status_code == 422
    assert client.get("/clusters/-1").status_code == 422


def test_health_says_where_the_clusters_come_from(client: TestClient, headed: Headed) -> None:
    body = client.get("/health").json()
    assert body["clusters"] == N_CLUSTERS
    assert str(head_path(headed.run)) in body["clusters_note"]


def _no_clusters(app: Any) -> None:
    with TestClient(app) as c:
        item = c.get("/items/blue/0.png").json()
        assert item["cluster"] is None and item["cluster_url"] is None
        neighbours = c.get("/items/blue/0.png/neighbors").json()["neighbors"]
        assert all(n["cluster"] is None for n in neighbours)
        for url in ("/clusters", "/clusters/0"):
            r = c.get(url)
            assert r.status_code == 404
            assert r.json()["detail"].startswith("this server has no clusters")
        assert c.get("/health").json()["clusters"] == 0


def test_without_a_head_the_server_says_how_to_train_one(built: Built) -> None:
    app = create_app(built.index)  # the fixture's run has no head
    note = app.state.service.clusters_note
    assert note == f"no cluster head: train one with `latentsearch cluster {built.run}`"
    _no_clusters(app)


def test_a_head_of_other_weights_or_clusters_off_serve_without_clusters(
    built: Built, tmp_path: Path, headed: Headed
) -> None:
    app = create_app(built.index, headed.run, clusters=False)
    assert app.state.service.clusters_note == "clusters off (asked for)"
    _no_clusters(app)

    run = tmp_path / "run"
    shutil.copytree(headed.run, run)
    state = torch.load(head_path(run), weights_only=False)
    torch.save({**state, "encoder_sha256": "0" * 64}, head_path(run))  # another encoder's
    app = create_app(built.index, run)  # still serves search, and says why no clusters
    assert "another encoder's weights" in app.state.service.clusters_note
    _no_clusters(app)


def test_served_clusters_order_members_by_probability_then_position() -> None:
    prob = np.array(
        [[0.6, 0.4, 0.0], [0.9, 0.1, 0.0], [0.2, 0.8, 0.0], [0.6, 0.3, 0.1], [0.7, 0.3, 0.0]],
        dtype=np.float32,
    )
    served = ServedClusters.from_probabilities(None, prob)  # type: ignore[arg-type]
    np.testing.assert_array_equal(served.assignment, [0, 0, 1, 0, 0])
    np.testing.assert_allclose(served.probability, [0.6, 0.9, 0.8, 0.6, 0.7])
    assert [m.tolist() for m in served.members] == [[1, 4, 0, 3], [2], []]
    assert served.n_clusters == 3
