"""Many short strings (image ids) in two flat arrays instead of one Python object each.

A Python ``str`` costs about 50 bytes of header plus a pointer in its list; a million ids of
30 characters take ~90 MB that way. :class:`StringColumn` keeps their UTF-8 bytes one after
the other in one buffer and where each starts in an int64 array (the Arrow layout): the
bytes plus 8 per string. A folder listing (``data.folder``) and an index's item table
(``index.items``) both hold their ids in one.
"""

from __future__ import annotations

from array import array
from collections.abc import Iterable, Iterator, Sequence
from typing import overload

import numpy as np


class StringColumn(Sequence[str]):
    """Strings stored as one UTF-8 buffer and the offsets between them. Read-only.

    Slicing with step 1 gives a column that shares this one's buffer and offsets (no copy);
    other slices are copied.

    Args:
        data: Every string's UTF-8 bytes, one after the other.
        offsets: Where each string starts in ``data``; the last entry is where the last one
            ends. Need not start at 0 (a view into a larger buffer). Shape: (N + 1,), int64.

    Raises:
        ValueError: When the offsets do not fit ``data`` or decrease.
    """

    __slots__ = ("_data", "_offsets")

    def __init__(self, data: bytes, offsets: np.ndarray) -> None:
        offsets = np.asarray(offsets)
        if offsets.ndim != 1 or len(offsets) < 1 or offsets.dtype != np.int64:
            raise ValueError(
                f"offsets must be int64 of shape (N + 1,), got {offsets.dtype} {offsets.shape}"
            )
        if offsets[0] < 0 or offsets[-1] > len(data) or np.any(offsets[1:] < offsets[:-1]):
            raise ValueError(f"offsets must increase within the {len(data)} bytes of data")
        self._data = data
        self._offsets = offsets

    @classmethod
    def from_strings(cls, strings: Iterable[str]) -> StringColumn:
        """The column holding ``strings``, in order."""
        builder = StringColumnBuilder()
        for s in strings:
            builder.append(s)
        return builder.build()

    def raw(self, i: int) -> bytes:
        """The UTF-8 bytes of string ``i`` (0 <= i < len)."""
        return self._data[int(self._offsets[i]) : int(self._offsets[i + 1])]

    def __len__(self) -> int:
        return len(self._offsets) - 1

    @overload
    def __getitem__(self, i: int) -> str: ...

    @overload
    def __getitem__(self, i: slice) -> StringColumn: ...

    def __getitem__(self, i: int | slice) -> str | StringColumn:
        n = len(self)
        if isinstance(i, slice):
            start, stop, step = i.indices(n)
            if step == 1:
                stop = max(start, stop)
                return StringColumn(self._data, self._offsets[start : stop + 1])
            return StringColumn.from_strings(self[j] for j in range(start, stop, step))
        if not -n <= i < n:
            raise IndexError(f"string {i} of {n}")
        return self.raw(i % n).decode("utf-8")

    def __iter__(self) -> Iterator[str]:
        return (raw.decode("utf-8") for raw in self.raw_iter())

    def raw_iter(self) -> Iterator[bytes]:
        """Every string's UTF-8 bytes, in order."""
        data, off = self._data, self._offsets.tolist()
        for i in range(len(off) - 1):
            yield data[off[i] : off[i + 1]]

    @property
    def nbytes(self) -> int:
        """Bytes of the strings spanned by this column plus its offsets."""
        return int(self._offsets[-1] - self._offsets[0]) + self._offsets.nbytes


class StringColumnBuilder:
    """Collects strings one at a time into a :class:`StringColumn`, without an object each."""

    def __init__(self) -> None:
        self._data = bytearray()
        self._ends = array("q")  # a list would hold an 8-byte pointer plus an int object each

    def __len__(self) -> int:
        return len(self._ends)

    def append(self, s: str) -> None:
        """Appends one string."""
        self._data += s.encode("utf-8")
        self._ends.append(len(self._data))

    def build(self) -> StringColumn:
        """The column of the strings appended so far."""
        offsets = np.zeros(len(self._ends) + 1, dtype=np.int64)
        if self._ends:
            offsets[1:] = np.frombuffer(self._ends, dtype=np.int64)
        return StringColumn(bytes(self._data), offsets)
