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


class Neighbor(BaseModel):
    """One search result."""

    rank: int = Field(description="1 for the nearest")
    id: str
    label: int = Field(description="class index, -1 when unknown")
    class_name: str | None = Field(description="the class's name, null when unknown")
    distance: float = Field(description="squared Euclidean distance between the embeddings")
    image_url: str
    item_url: str
    neighbors_url: str


class UploadQuery(BaseModel):
    """A query image that was uploaded."""

    kind: Literal["upload"] = "upload"
    filename: str | None = Field(description="the name the client gave the file")
    content_type: str | None = Field(description="the content type the client claimed")
    bytes: int = Field(description="size of the upload")
    format: str = Field(description="the format Pillow found, e.g. PNG or JPEG")
    width: int
    height: int


class ItemQuery(Item):
    """A query that is an indexed image (search by id, random query)."""

    kind: Literal["item"] = "item"


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
    class_names: list[str]
    default_k: int
    max_k: int
    max_upload_bytes: int
    max_pixels: int


class Problem(BaseModel):
    """An error: ``detail`` is a sentence meant for the user."""

    detail: str
