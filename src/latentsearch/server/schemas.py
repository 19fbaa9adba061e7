"""The JSON bodies of the search server's responses, as pydantic models (shown at ``/docs``)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field


class Item(BaseModel):
    """One indexed image.

    The absolute file path is left out on purpose: it tells a client nothing it can use (the
    image is served at ``image_url``) and would reveal the server's folder layout.
    """

    id: str = Field(description="the id in the index: the path relative to the indexed folder")
    label: int = Field(description="class index, -1 when unknown")
    class_name: str | None = Field(description="the class's name, null when unknown")
    filename: str | None = Field(description="base name of the file, null for array sources")
    sha256: str | None = Field(description="SHA-256 of the file when indexed, null if none")
    image_url: str = Field(description="the image itself")
    item_url: str = Field(description="this metadata")
    neighbors_url: str = Field(description="its nearest indexed images (GET, ?k=)")
    cluster: int | None = Field(
        default=None, description="its group, from the run's cluster head; null without one"
    )
    cluster_probability: float | None = Field(
        default=None, description="the head's probability of that group"
    )
    cluster_url: str | None = Field(
        default=None, description="the images of that group, most probable first (GET)"
    )


class Neighbor(BaseModel):
    """One search result."""

    rank: int = Field(description="1 for the nearest")
    id: str
    label: int = Field(description="class index, -1 when unknown")
    class_name: str | None = Field(description="the class's name, null when unknown")
    filename: str | None = Field(
        default=None, description="base name of the file, null for array sources"
    )
    distance: float = Field(description="squared Euclidean distance between the embeddings")
    image_url: str
    item_url: str
    neighbors_url: str
    cluster: int | None = Field(default=None, description="its group; null without a head")


class UploadQuery(BaseModel):
    """A query image that was uploaded."""

    kind: Literal["upload"] = "upload"
    filename: str | None = Field(description="the name the client gave the file")
    content_type: str | None = Field(description="the content type the client claimed")
    bytes: int = Field(description="size of the upload")
    format: str = Field(description="the format Pillow found, e.g. PNG or JPEG")
    width: int
    height: int
    box: list[int] | None = Field(
        default=None,
        description="the part searched with, [x, y, width, height] in the image's pixels; "
        "null for the whole image",
    )
    cluster: int | None = Field(default=None, description="its group; null without a head")
    cluster_probability: float | None = None
    cluster_url: str | None = None


class ItemQuery(Item):
    """A query that is an indexed image (search by id, random query)."""

    kind: Literal["item"] = "item"
    box: list[int] | None = Field(
        default=None,
        description="the part searched with, [x, y, width, height] in the image's pixels; "
        "null for the whole image",
    )


class SearchResult(BaseModel):
    """A query and its nearest indexed images, nearest first."""

    query: UploadQuery | ItemQuery = Field(discriminator="kind")
    k: int = Field(description="neighbours asked for; fewer come back from a smaller index")
    neighbors: list[Neighbor]
    milliseconds: float = Field(description="time spent on decoding, embedding and search")


class Health(BaseModel):
    """What the server serves, and its limits."""

    status: Literal["ok"] = "ok"
    items: int = Field(description="indexed images")
    model: str
    image_size: int = Field(description="side of the square images the model takes")
    channels: int = Field(description="1 (grey) or 3 (RGB)")
    embedding_dim: int
    index_type: str = Field(description="flat (exact), hnsw or ivf (approximate)")
    class_names: list[str] = Field(description="empty when the index was built without labels")
    labelled: bool = Field(
        description="built with labels: class names are shown only then (folder names of an "
        "index built without labels are places, not classes)"
    )
    default_k: int
    max_k: int
    max_upload_bytes: int
    max_pixels: int
    clusters: int = Field(description="groups of the run's cluster head; 0 without one")
    clusters_note: str = Field(description="where the groups come from, or why there are none")


class ClusterSummary(BaseModel):
    """One group of the run's cluster head."""

    cluster: int
    size: int = Field(description="indexed images in it")
    url: str = Field(description="its images, most probable first (GET, ?offset=&limit=)")


class ClusterList(BaseModel):
    """The groups the run's cluster head finds in the index."""

    items: int = Field(description="indexed images")
    clusters: list[ClusterSummary]


class ClusterPage(BaseModel):
    """Part of one group's images, most probable first."""

    cluster: int
    size: int = Field(description="indexed images in the group")
    offset: int = Field(description="position of the first image below in the group's order")
    items: list[Item]
    next_url: str | None = Field(description="the next part; null after the last")


class ItemPage(BaseModel):
    """Part of the index's images, in index order."""

    total: int = Field(description="indexed images")
    offset: int = Field(description="position of the first image below; past the end: none")
    limit: int = Field(description="images asked for")
    items: list[Item]
    next_url: str | None = Field(description="the next part; null after the last")


class Problem(BaseModel):
    """An error: ``detail`` is a sentence meant for the user."""

    detail: str
