from __future__ import annotations

import hashlib
import io
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from latentsearch.index import items as items_mod
from latentsearch.index.items import (
    IndexItem,
    ItemTable,
    ManifestFormatError,
    ManifestItemsError,
    item_json,
    read_manifest,
    write_manifest,
)

FORMAT = "latentsearch-index/1"


def _sha(i: int) -> str:
    return hashlib.sha256(str(i).encode()).hexdigest()


def _mixed() -> list[IndexItem]:
    """One item of each kind the table stores differently."""
    return [
        IndexItem("cats/a.png", "/data/photos/cats/a.png", 0, _sha(0)),  # prefix + id, hex digest
        IndexItem("cats/b.png", "/data/photos/cats/b.png", 0, _sha(1)),
        IndexItem("dogs/ünï.jpg", "/other/place/ünï.jpg", 1, "not-a-digest"),  # own path
        IndexItem("digits/train/3", None, -1, None),  # array source: no file, no digest
        IndexItem("x.png", "x.png", 2, _sha(2).upper()),  # path == id; upper-case digest kept
    ]


def test_a_table_gives_back_every_item_and_finds_each_id() -> None:
    items = _mixed()
    table = ItemTable.from_items(items)
    assert len(table) == len(items)
    assert list(table) == items and table == items and tuple(items) == table
    assert table[-1] == items[-1] and table[1:3] == items[1:3]
    for p, it in enumerate(items):
        assert table.position(it.id) == p
        assert (table.id(p), table.path(p), table.label(p), table.sha256(p)) == (
            it.id,
            it.path,
            it.label,
            it.sha256,
        )
    assert table.position("cats/c.png") is None and table.position("") is None
    assert items[2] in table and IndexItem("cats/a.png", None, 0, None) not in table
    with pytest.raises(IndexError):
        table[len(items)]
    assert ItemTable.from_items(table) is table


def test_a_repeated_id_is_refused_by_name() -> None:
    items = [*_mixed(), IndexItem("cats/b.png", "/elsewhere/cats/b.png", 3, None)]
    with pytest.raises(ValueError, match=r"'cats/b\.png' appears more than once"):
        ItemTable.from_items(items)


def test_ids_with_equal_hashes_are_told_apart(monkeypatch: pytest.MonkeyPatch) -> None:
    # Every id hashes alike: lookups must compare the ids themselves.
    monkeypatch.setattr(items_mod, "hash", lambda b: 7, raising=False)
    items = _mixed()
    table = ItemTable.from_items(items)
    assert [table.position(it.id) for it in items] == list(range(len(items)))
    assert table.position("nope") is None
    with pytest.raises(ValueError, match=r"'x\.png' appears more than once"):
        ItemTable.from_items([*items, IndexItem("x.png", None, 0, None)])


def test_typical_items_cost_far_less_than_objects() -> None:
    n = 2000
    table = ItemTable.from_items(
        IndexItem(
            f"c{i % 10}/img_{i:07d}.png", f"/data/set/c{i % 10}/img_{i:07d}.png", i % 10, _sha(i)
        )
        for i in range(n)
    )
    # 18-byte id + 8 offset + 4 label + 4 path code + 32 digest + 1 flag + 16 lookup = 83.
    assert table.nbytes / n < 100
    assert table[1234].path == "/data/set/c4/img_0001234.png"


_ids = st.text(min_size=1, max_size=12)
_items = st.lists(
    st.tuples(
        st.one_of(st.none(), st.text(max_size=8)),
        st.integers(-1, 2**31 - 1),
        st.one_of(st.none(), st.text(max_size=70), st.binary(min_size=32, max_size=32)),
    ),
    max_size=30,
)


@settings(max_examples=60, deadline=None)
@given(ids=st.lists(_ids, unique=True, max_size=30), rest=_items)
def test_any_items_survive_the_table_and_the_manifest(ids: list[str], rest: list[Any]) -> None:
    items = []
    for i, (prefix, label, sha) in zip(ids, rest, strict=False):
        path = None if prefix is None else prefix + i
        digest = sha.hex() if isinstance(sha, bytes) else sha
        items.append(IndexItem(i, path, label, digest))
    table = ItemTable.from_items(items)
    assert list(table) == items
    assert [table.position(it.id) for it in items] == list(range(len(items)))
    f = io.BytesIO()
    write_manifest(f, {"format": FORMAT, "count": len(items)}, table)
    text = f.getvalue().decode("utf-8")
    # A manifest holds SHA-256 digests (64 hex digits) or null: anything else is refused.
    if not all(it.sha256 is None or _is_digest(it.sha256) for it in items):
        with pytest.raises(ManifestItemsError, match="is not 64 hex digits or null"):
            read_manifest(text, expect_format=FORMAT)
        return
    meta, back = read_manifest(text, expect_format=FORMAT)
    assert meta == {"format": FORMAT, "count": len(items)} and list(back) == items


def _is_digest(sha: str) -> bool:
    return len(sha) == 64 and all(c in "0123456789abcdefABCDEF" for c in sha)


def test_the_manifest_is_the_json_of_the_whole_dict() -> None:
    items = _mixed()
    meta = {"format": FORMAT, "class_names": ["cat", "dög"], "nested": {"a": [1, 2]}}
    f = io.BytesIO()
    write_manifest(f, meta, ItemTable.from_items(items))
    whole = json.loads(f.getvalue())
    assert whole == {**meta, "items": [item_json(it) for it in items]}
    # Many items: written in batches, still one list.
    many = [IndexItem(f"i{k}", None, k % 3, None) for k in range(10_000)]
    f = io.BytesIO()
    write_manifest(f, {"format": FORMAT}, many)
    assert json.loads(f.getvalue())["items"][9_999] == item_json(many[-1])


def test_reading_finds_items_anywhere_and_checks_the_format_first() -> None:
    digests = [it for it in _mixed() if it.sha256 != "not-a-digest"]
    entries = [item_json(it) for it in digests]
    text = json.dumps({"count": 4, "items": entries, "format": FORMAT, "tail": None})
    meta, table = read_manifest(text, expect_format=FORMAT)
    assert meta == {"count": 4, "format": FORMAT, "tail": None} and list(table) == digests
    # Another format is named, before malformed items of that format are read.
    other = json.dumps({"format": "latentsearch-index/2", "items": [{"weird": 1}]})
    with pytest.raises(ManifestFormatError, match="latentsearch-index/2"):
        read_manifest(other, expect_format=FORMAT)
    with pytest.raises(ManifestFormatError):
        read_manifest("[1, 2]", expect_format=FORMAT)
    with pytest.raises(ManifestFormatError):
        read_manifest(json.dumps({"items": []}), expect_format=FORMAT)


@pytest.mark.parametrize(
    ("items", "why"),
    [
        ('{"id": "a", "path": null, "label": 1}', "sha256"),
        ('{"id": 3, "path": null, "label": 1, "sha256": null}', "not a string"),
        ('{"id": "a", "path": null, "label": true, "sha256": null}', "not an integer"),
        ('"a"', "not an object"),
        ('{"id": "a", "path": null, "label": 1, "sha256": "zz"}', "'zz' is not 64 hex digits"),
        ('{"id": "a", "path": null, "label": 1, "sha256": "' + "g" * 64 + '"}', "64 hex digits"),
        (
            '{"id": "a", "path": null, "label": 1, "sha256": null}, '
            '{"id": "a", "path": null, "label": 2, "sha256": null}',
            "ids are not unique",
        ),
    ],
)
def test_malformed_items_are_named(items: str, why: str) -> None:
    text = f'{{"format": "{FORMAT}", "items": [{items}]}}'
    with pytest.raises(ManifestItemsError, match=why):
        read_manifest(text, expect_format=FORMAT)
    with pytest.raises(ManifestItemsError, match="out of range"):
        big = '{"id": "a", "path": null, "label": 4294967296, "sha256": null}'
        read_manifest(f'{{"format": "{FORMAT}", "items": [{big}]}}', expect_format=FORMAT)
    with pytest.raises(ManifestItemsError, match="not a list"):
        read_manifest(f'{{"format": "{FORMAT}", "items": 3}}', expect_format=FORMAT)


@pytest.mark.parametrize(
    "text",
    [
        f'{{"format": "{FORMAT}", ',
        f'{{"format": "{FORMAT}"}} trailing',
        '{"items": [{"id": }]}',
        "",
        "{1: 2}",
    ],
)
def test_text_that_is_not_json_is_a_decode_error(text: str) -> None:
    with pytest.raises(json.JSONDecodeError):
        read_manifest(text, expect_format=FORMAT)


def test_bulk_lookup_agrees_with_one_at_a_time(monkeypatch: pytest.MonkeyPatch) -> None:
    table = ItemTable.from_items(_mixed())
    asked = ["x.png", "missing", "cats/a.png", "dogs/ünï.jpg", "", "digits/train/3"]
    expected = [-1 if table.position(i) is None else table.position(i) for i in asked]
    assert table.positions(asked).tolist() == expected == [4, -1, 0, 2, -1, 3]
    assert table.positions([]).shape == (0,)
    monkeypatch.setattr(items_mod, "hash", lambda b: 7, raising=False)
    collided = ItemTable.from_items(_mixed())
    assert collided.positions(asked).tolist() == expected
