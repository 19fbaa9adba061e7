"""The indexed images' metadata, column by column, and its manifest form.

An index holds one entry per image: id, file path, label and the SHA-256 of the file. Held
as Python objects (an :class:`IndexItem` each, plus a dict from id to position) that costs
about 520 bytes per image, more than the 512 of a 128-float vector; :class:`ItemTable` keeps
the same entries in a few flat arrays (about 100 bytes per image for typical ids) and makes
an :class:`IndexItem` only when one is asked for. The manifest's ``items`` list is written
and read an entry at a time, so neither saving nor loading builds the whole list in memory.
"""

from __future__ import annotations

import json
from array import array
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import IO, Any, overload

import numpy as np

from latentsearch.data.strings import StringColumn, StringColumnBuilder

_SHA_BYTES = 32
_NO_PATH = -1  # path code: the item has no file (array sources)
_OWN_PATH = -2  # path code: the path is not a known prefix + id, kept whole in ``_paths``
_WRITE_BATCH = 4096  # manifest items per write
_LABEL_MIN, _LABEL_MAX = -(2**31), 2**31 - 1  # labels are stored as int32


@dataclass(frozen=True, slots=True)
class IndexItem:
    """One indexed image.

    Attributes:
        id: Stable identifier from the data source (a folder's path relative to its root).
        path: Absolute file path, None for array sources (digits, CIFAR-10 batches).
        label: Class index, -1 when unknown.
        sha256: SHA-256 of the file's bytes, None for array sources.
    """

    id: str
    path: str | None
    label: int
    sha256: str | None


def _sha_bytes(sha: str | None) -> bytes | None:
    """The 32 bytes of a lowercase hex SHA-256, None for anything else."""
    if sha is None or len(sha) != 2 * _SHA_BYTES or sha != sha.lower():
        return None
    try:
        return bytes.fromhex(sha)
    except ValueError:
        return None


class ItemTableBuilder:
    """Collects items one at a time into an :class:`ItemTable`, without an object per item."""

    def __init__(self) -> None:
        # Flat arrays rather than lists: a list holds an 8-byte pointer plus an int object.
        self._ids = StringColumnBuilder()
        self._labels = array("i")
        self._path_codes = array("i")
        self._prefixes: dict[str, int] = {}
        self._paths: dict[int, str] = {}
        self._sha = bytearray()
        self._has_sha = bytearray()
        self._shas: dict[int, str] = {}

    def __len__(self) -> int:
        return len(self._ids)

    def add(self, id: str, path: str | None, label: int, sha256: str | None) -> None:
        """Appends one item (the fields of :class:`IndexItem`).

        Raises:
            ValueError: For a label outside int32 (class indexes are small; -1 is unknown).
        """
        if not _LABEL_MIN <= label <= _LABEL_MAX:
            raise ValueError(f"label {label} of {id!r} is out of range (a class index, or -1)")
        p = len(self._ids)
        self._ids.append(id)
        self._labels.append(int(label))
        if path is None:
            code = _NO_PATH
        elif path.endswith(id) and len(path) > len(id):
            code = self._prefixes.setdefault(path[: len(path) - len(id)], len(self._prefixes))
        else:
            code = _OWN_PATH
            self._paths[p] = path
        self._path_codes.append(code)
        raw = _sha_bytes(sha256)
        self._has_sha.append(sha256 is not None)  # bytearray.append takes 0 or 1
        self._sha += raw if raw is not None else bytes(_SHA_BYTES)
        if sha256 is not None and raw is None:
            self._shas[p] = sha256  # not a hex digest: kept as it was given

    def extend(self, items: Iterable[IndexItem]) -> None:
        """Appends items in order."""
        for it in items:
            self.add(it.id, it.path, it.label, it.sha256)

    def build(self) -> ItemTable:
        """The table of the items added so far.

        Raises:
            ValueError: When an id appears more than once.
        """
        n = len(self._ids)
        return ItemTable(
            ids=self._ids.build(),
            labels=np.array(self._labels, dtype=np.int32).reshape(n),
            path_codes=np.array(self._path_codes, dtype=np.int32).reshape(n),
            prefixes=sorted(self._prefixes, key=self._prefixes.__getitem__),
            paths=dict(self._paths),
            sha256=np.frombuffer(bytes(self._sha), dtype=np.uint8).reshape(n, _SHA_BYTES),
            has_sha256=np.frombuffer(bytes(self._has_sha), dtype=bool).reshape(n),
            other_sha256=dict(self._shas),
        )


class ItemTable(Sequence[IndexItem]):
    """The items of an index, in position order, stored as columns.

    Behaves as a read-only sequence of :class:`IndexItem` (``table[p]``, ``len``, iteration,
    slices as lists), and finds an id's position without a dict of every id: ids are looked
    up by a 64-bit hash in a sorted array, then compared. Build one with
    :meth:`from_items` or :class:`ItemTableBuilder`.
    """

    def __init__(
        self,
        *,
        ids: StringColumn,
        labels: np.ndarray,
        path_codes: np.ndarray,
        prefixes: list[str],
        paths: dict[int, str],
        sha256: np.ndarray,
        has_sha256: np.ndarray,
        other_sha256: dict[int, str],
    ) -> None:
        """Internal: use :meth:`from_items` or :class:`ItemTableBuilder`.

        Args:
            ids: Every id, in position order.
            labels: Shape: (N,), int32.
            path_codes: Index into ``prefixes`` (path = prefix + id), ``-1`` for no path,
                ``-2`` for a path kept whole in ``paths``. Shape: (N,), int32.
            prefixes: Path prefixes.
            paths: Position -> path, for code ``-2``.
            sha256: Digests as bytes (zeros where absent or kept in ``other_sha256``).
                Shape: (N, 32), uint8.
            has_sha256: Whether the item has a digest. Shape: (N,), bool.
            other_sha256: Position -> digest that is not 64 lowercase hex digits.

        Raises:
            ValueError: When an id appears more than once.
        """
        self._ids = ids
        self._labels = labels
        self._path_codes = path_codes
        self._prefixes = prefixes
        self._paths = paths
        self._sha = sha256
        self._has_sha = has_sha256
        self._other_sha = other_sha256
        n = len(labels)
        if len(ids) != n:
            raise ValueError(f"{len(ids)} ids but {n} labels")
        hashes = np.fromiter((hash(b) for b in ids.raw_iter()), dtype=np.int64, count=n)
        self._order = np.argsort(hashes, kind="stable")
        self._sorted_hashes = hashes[self._order]
        # Equal ids have equal hashes; equal hashes of different ids are possible, if rare.
        same = np.flatnonzero(self._sorted_hashes[1:] == self._sorted_hashes[:-1])
        for s in same.tolist():
            h = self._sorted_hashes[s]
            hi = int(np.searchsorted(self._sorted_hashes, h, side="right"))
            seen: set[bytes] = set()
            for k in range(s, hi):
                key = self._id_bytes(int(self._order[k]))
                if key in seen:
                    raise ValueError(
                        f"image ids must be unique; {key.decode('utf-8')!r} appears more than once"
                    )
                seen.add(key)

    @classmethod
    def from_items(cls, items: Iterable[IndexItem]) -> ItemTable:
        """The table of ``items``, in order (a table is returned as it is).

        Raises:
            ValueError: When an id appears more than once.
        """
        if isinstance(items, ItemTable):
            return items
        builder = ItemTableBuilder()
        builder.extend(items)
        return builder.build()

    # ------------------------------------------------------------------------ columns
    def _id_bytes(self, p: int) -> bytes:
        return self._ids.raw(p)

    def id(self, p: int) -> str:
        """The id at position ``p``."""
        return self._ids[p]

    def ids(self) -> Iterator[str]:
        """Every id, in position order."""
        return iter(self._ids)

    def label(self, p: int) -> int:
        """The label at position ``p``."""
        return int(self._labels[p])

    def labels(self) -> np.ndarray:
        """Every label, in position order (-1: none). Shape: (N,), int32, read-only view."""
        view = self._labels.view()
        view.flags.writeable = False
        return view

    def path(self, p: int) -> str | None:
        """The file path at position ``p``, None for items without a file."""
        code = int(self._path_codes[p])
        if code == _NO_PATH:
            return None
        if code == _OWN_PATH:
            return self._paths[p]
        return self._prefixes[code] + self.id(p)

    def sha256(self, p: int) -> str | None:
        """The SHA-256 at position ``p``, None when the item has none."""
        if not self._has_sha[p]:
            return None
        other = self._other_sha.get(p)
        return other if other is not None else self._sha[p].tobytes().hex()

    def position(self, id: str) -> int | None:
        """The position of ``id``, None when the table does not hold it."""
        key = id.encode("utf-8")
        h = hash(key)
        k = int(np.searchsorted(self._sorted_hashes, h, side="left"))
        while k < len(self._sorted_hashes) and self._sorted_hashes[k] == h:
            p = int(self._order[k])
            if self._id_bytes(p) == key:
                return p
            k += 1
        return None

    def positions(self, ids: Iterable[str]) -> np.ndarray:
        """The position of each id, -1 where the table does not hold it (vectorised lookup).

        Returns:
            Shape: (number of ids,), int64.
        """
        keys = [i.encode("utf-8") for i in ids]
        if not keys or not len(self):
            return np.full(len(keys), -1, dtype=np.int64)
        hashes = np.fromiter((hash(k) for k in keys), dtype=np.int64, count=len(keys))
        at = np.searchsorted(self._sorted_hashes, hashes, side="left")
        found = at < len(self._sorted_hashes)
        found[found] = self._sorted_hashes[at[found]] == hashes[found]
        out = np.where(found, self._order[np.minimum(at, len(self) - 1)], -1)
        for j in np.flatnonzero(found).tolist():
            if self._id_bytes(int(out[j])) != keys[j]:  # another id with the same hash
                p = self.position(keys[j].decode("utf-8"))
                out[j] = -1 if p is None else p
        return out

    @property
    def nbytes(self) -> int:
        """Bytes held by the columns (not counting the rare paths and digests kept whole)."""
        arrays = (self._labels, self._path_codes, self._sha, self._has_sha)
        lookup = self._order.nbytes + self._sorted_hashes.nbytes
        return self._ids.nbytes + sum(a.nbytes for a in arrays) + lookup

    # ------------------------------------------------------------------------ sequence
    def __len__(self) -> int:
        return len(self._labels)

    @overload
    def __getitem__(self, p: int) -> IndexItem: ...

    @overload
    def __getitem__(self, p: slice) -> list[IndexItem]: ...

    def __getitem__(self, p: int | slice) -> IndexItem | list[IndexItem]:
        if isinstance(p, slice):
            return [self[i] for i in range(*p.indices(len(self)))]
        n = len(self)
        if not -n <= p < n:
            raise IndexError(f"item position {p} out of range for {n} items")
        p = p % n
        return IndexItem(self.id(p), self.path(p), self.label(p), self.sha256(p))

    def __iter__(self) -> Iterator[IndexItem]:
        for p in range(len(self)):
            yield self[p]

    def __contains__(self, item: object) -> bool:
        if not isinstance(item, IndexItem):
            return False
        p = self.position(item.id)
        return p is not None and self[p] == item

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Sequence) or isinstance(other, (str, bytes)):
            return NotImplemented
        return len(self) == len(other) and all(a == b for a, b in zip(self, other, strict=True))

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"ItemTable({len(self)} items, {self.nbytes / max(len(self), 1):.0f} bytes each)"


# ---------------------------------------------------------------------------- manifest form
def item_json(item: IndexItem) -> dict[str, Any]:
    """An item as the manifest stores it."""
    return {"id": item.id, "path": item.path, "label": item.label, "sha256": item.sha256}


def write_manifest(f: IO[bytes], meta: dict[str, Any], items: Sequence[IndexItem]) -> None:
    """Writes ``{**meta, "items": [...]}`` as JSON, a batch of items at a time.

    The result parses to the same object as ``json.dumps`` of the whole dict would, without
    that dict and its text ever being in memory at once.
    """
    head = _json_utf8(meta, indent=1)
    if not head.endswith(b"}"):
        raise ValueError("the manifest's metadata must be a JSON object")
    body = head[:-1].rstrip()
    sep = b",\n" if body != b"{" else b"\n"
    f.write(body + sep + b' "items": [')
    for start in range(0, len(items), _WRITE_BATCH):
        lines = (
            _json_utf8(item_json(items[p]))
            for p in range(start, min(start + _WRITE_BATCH, len(items)))
        )
        f.write((b"," if start else b"") + b"\n  " + b",\n  ".join(lines))
    f.write(b"\n ]\n}\n")


def _json_utf8(value: Any, indent: int | None = None) -> bytes:
    """``value`` as JSON in UTF-8; text that cannot be UTF-8 is written as ``\\u`` escapes.

    A path can hold a file name's bytes that are not UTF-8 (``os.fsdecode`` keeps them as
    lone surrogates); escaped, the file stays UTF-8 and ``json.loads`` gives the same path.
    """
    text = json.dumps(value, indent=indent, ensure_ascii=False)
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        return json.dumps(value, indent=indent).encode("ascii")


def _item_fields(d: Any) -> tuple[str, str | None, int, str | None]:
    """One manifest entry's fields; TypeError / KeyError when malformed."""
    if not isinstance(d, dict):
        raise TypeError(f"an item is not an object: {d!r:.60}")
    item_id, path, label, sha = d["id"], d["path"], d["label"], d["sha256"]
    if not isinstance(item_id, str):
        raise TypeError(f"item id {item_id!r} is not a string")
    if path is not None and not isinstance(path, str):
        raise TypeError(f"item {item_id!r}: path {path!r} is not a string")
    if isinstance(label, bool) or not isinstance(label, int):
        raise TypeError(f"item {item_id!r}: label {label!r} is not an integer")
    if sha is not None and not isinstance(sha, str):
        raise TypeError(f"item {item_id!r}: sha256 {sha!r} is not a string")
    return item_id, path, label, sha


class ManifestFormatError(ValueError):
    """The text is JSON but not a manifest of the expected format."""

    def __init__(self, found: object) -> None:
        super().__init__(f"format {found!r}")
        self.found = found


class ManifestItemsError(ValueError):
    """The manifest's ``items`` are malformed: an entry of the wrong shape, or repeated ids."""


_DECODER = json.JSONDecoder()
_WS = " \t\n\r"


def _skip(text: str, i: int) -> int:
    while i < len(text) and text[i] in _WS:
        i += 1
    return i


def _expect(text: str, i: int, char: str) -> int:
    i = _skip(text, i)
    if i >= len(text) or text[i] != char:
        raise json.JSONDecodeError(f"expected {char!r}", text, i)
    return i + 1


def _peek(text: str, i: int, char: str) -> int | None:
    """The position after ``char`` when it is the next non-blank character, else None."""
    i = _skip(text, i)
    return i + 1 if i < len(text) and text[i] == char else None


def read_manifest(text: str, *, expect_format: str) -> tuple[dict[str, Any], ItemTable]:
    """Parses a manifest, reading its ``items`` an entry at a time into a table.

    Args:
        text: The manifest's JSON text.
        expect_format: The ``format`` value it must have; checked before any item is read
            when ``format`` comes first (as :func:`write_manifest` writes it).

    Returns:
        The manifest without ``items``, and the table.

    Raises:
        json.JSONDecodeError: For text that is not JSON.
        ManifestFormatError: For JSON that is not an object of format ``expect_format``.
        ManifestItemsError: When ``items`` is missing or not a list of entries with ``id``,
            ``path``, ``label`` and ``sha256`` (64 hex digits or null) of the right types and
            unique ids.
    """
    if _peek(text, 0, "{") is None:
        json.loads(text)  # JSONDecodeError when it is not JSON at all
        raise ManifestFormatError(None)
    meta: dict[str, Any] = {}
    table: ItemTable | None = None
    i = _expect(text, 0, "{")
    end = _peek(text, i, "}")
    while end is None:
        key, i = _DECODER.raw_decode(text, _skip(text, i))
        if not isinstance(key, str):
            raise json.JSONDecodeError("expected a key", text, i)
        i = _expect(text, i, ":")
        if key == "items":
            table, i = _read_items(text, i)
        else:
            meta[key], i = _DECODER.raw_decode(text, _skip(text, i))
            if key == "format" and meta[key] != expect_format:
                raise ManifestFormatError(meta[key])
        after_comma = _peek(text, i, ",")
        if after_comma is not None:
            i = after_comma
            continue
        end = _expect(text, i, "}")
    if _skip(text, end) != len(text):
        raise json.JSONDecodeError("extra data", text, _skip(text, end))
    if meta.get("format") != expect_format:
        raise ManifestFormatError(meta.get("format"))
    if table is None:
        raise ManifestItemsError("no items")
    return meta, table


def _read_items(text: str, i: int) -> tuple[ItemTable, int]:
    builder = ItemTableBuilder()
    i = _skip(text, i)
    if _peek(text, i, "[") is None:
        raise ManifestItemsError("items is not a list")
    i = _expect(text, i, "[")
    end = _peek(text, i, "]")
    while end is None:
        entry, i = _DECODER.raw_decode(text, _skip(text, i))
        try:
            builder.add(*_item_fields(entry))
        except (KeyError, TypeError, ValueError) as e:
            raise ManifestItemsError(f"item {len(builder)}: {e!r}") from None
        after_comma = _peek(text, i, ",")
        if after_comma is not None:
            i = after_comma
            continue
        end = _expect(text, i, "]")
    # The builder keeps digests that are not lowercase hex as given (few: none in a file that
    # latentsearch wrote); upper-case hex is a digest, anything else is not.
    odd = [p for p, sha in builder._shas.items() if _sha_bytes(sha.lower()) is None]
    if odd:
        p = min(odd)
        raise ManifestItemsError(
            f"item {p}: sha256 {builder._shas[p]!r:.80} is not 64 hex digits or null"
        )
    try:
        return builder.build(), end
    except ValueError:
        raise ManifestItemsError("ids are not unique") from None
