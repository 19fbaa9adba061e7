from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from latentsearch.data.strings import StringColumn, StringColumnBuilder

WORDS = ["train/cat/0001.jpg", "", "ü é/ß.png", "a", "日本/画像.jpeg"]


def test_a_column_reads_back_what_it_was_given() -> None:
    col = StringColumn.from_strings(WORDS)
    assert len(col) == 5
    assert list(col) == WORDS
    assert [col[i] for i in range(5)] == WORDS
    assert col[-1] == WORDS[-1] and col[-5] == WORDS[0]
    assert list(col.raw_iter()) == [w.encode("utf-8") for w in WORDS]
    assert col.raw(2) == "ü é/ß.png".encode()
    for bad in (5, -6):
        with pytest.raises(IndexError):
            col[bad]


def test_nbytes_is_the_utf8_bytes_plus_eight_per_string_and_one_offset() -> None:
    col = StringColumn.from_strings(WORDS)
    assert col.nbytes == sum(len(w.encode("utf-8")) for w in WORDS) + 8 * (len(WORDS) + 1)
    assert StringColumn.from_strings([]).nbytes == 8


def test_a_unit_step_slice_shares_the_buffer_and_others_copy() -> None:
    col = StringColumn.from_strings(WORDS)
    view = col[1:4]
    assert list(view) == WORDS[1:4]
    assert view._data is col._data  # the same buffer, not a copy
    assert np.shares_memory(view._offsets, col._offsets)
    assert view.nbytes == sum(len(w.encode("utf-8")) for w in WORDS[1:4]) + 8 * 4
    assert list(view[1:]) == WORDS[2:4]  # a view of a view
    assert list(col[::2]) == WORDS[::2]
    assert list(col[4:1]) == [] and list(col[10:]) == []


def test_offsets_that_do_not_fit_the_data_are_refused() -> None:
    with pytest.raises(ValueError, match="increase"):
        StringColumn(b"abc", np.array([0, 2, 1], dtype=np.int64))
    with pytest.raises(ValueError, match="increase"):
        StringColumn(b"abc", np.array([0, 4], dtype=np.int64))
    with pytest.raises(ValueError, match="int64"):
        StringColumn(b"abc", np.array([0, 3], dtype=np.int32))
    with pytest.raises(ValueError, match="int64"):
        StringColumn(b"", np.zeros(0, dtype=np.int64))


def test_the_builder_counts_and_builds_what_was_appended() -> None:
    builder = StringColumnBuilder()
    assert len(builder) == 0 and list(builder.build()) == []
    for w in WORDS:
        builder.append(w)
    assert len(builder) == len(WORDS)
    assert list(builder.build()) == WORDS


@given(st.lists(st.text(max_size=12), max_size=30), st.integers(0, 30), st.integers(0, 30))
def test_slices_match_python_lists(words: list[str], a: int, b: int) -> None:
    col = StringColumn.from_strings(words)
    assert list(col) == words
    assert list(col[a:b]) == words[a:b]
    assert list(col[a:][: max(b - a, 0)]) == words[a:][: max(b - a, 0)]
