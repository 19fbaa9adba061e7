"""How an index is built: one value, resolved once where a build starts and passed down.

>>> spec = IndexSpec(index_type="hnsw", precision="auto").resolve(run)
>>> spec.precision  # what this machine embeds in: fp32, bf16 or fp16
'bf16'
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from latentsearch.index import backends, stores
from latentsearch.index.errors import ImageIndexError
from latentsearch.index.vector_store import DEFAULT_BACKEND
from latentsearch.precision import resolve_precision

if TYPE_CHECKING:
    from latentsearch.runs import Run

DEFAULT_PRECISION = "fp32"
"""How images are embedded unless asked otherwise (exact), and what old manifests mean."""

EMBED_PRECISIONS = (DEFAULT_PRECISION, "bf16", "fp16")
"""What a manifest's ``precision`` may say: how the indexed images were embedded."""


def model_device(run: Run) -> Any:
    """The device the run's model is on (``torch.device``): where its images are embedded."""
    return next(run.model.parameters()).device


@dataclass(frozen=True)
class IndexSpec:
    """What to build: the index kind, the embedding precision and the vector store.

    Make one with what was asked for; :meth:`resolve` checks it and turns ``auto``
    precision into what the run's device has, once, before any work.
    """

    index_type: str = "auto"
    """One of ``backends.INDEX_TYPES``; ``auto`` is resolved by size when the store is built."""

    precision: str = DEFAULT_PRECISION
    """How to embed: ``fp32``, ``bf16``/``fp16`` autocast, or ``auto`` before :meth:`resolve`.
    Recorded in the manifest; queries and updates embed in the same precision."""

    backend: stores.Backend = DEFAULT_BACKEND
    """Where the vectors live: ``faiss`` (``index.faiss``), ``milvus`` (an embedded
    milvus-lite database in the index folder) or ``MilvusOptions(uri=...)`` (a server)."""

    def resolve(self, run: Run) -> IndexSpec:
        """This spec checked, with the precision the run's device will embed in.

        Raises:
            ImageIndexError: For an unknown index type or backend.
            PrecisionError: When the run's device cannot embed in ``precision``.
        """
        backends.check_index_type(self.index_type)
        stores.store_class(self.backend)
        precision = resolve_precision(self.precision, model_device(run))
        return dataclasses.replace(self, precision=precision)

    def check_embedded(self) -> None:
        """Refuses a precision that does not say how embeddings were made.

        Raises:
            ImageIndexError: Unless ``precision`` is one of ``EMBED_PRECISIONS``.
        """
        if self.precision not in EMBED_PRECISIONS:
            raise ImageIndexError(
                f"precision must be one of {', '.join(EMBED_PRECISIONS)} (how the embeddings "
                f"were made), got {self.precision!r}"
            )
