"""Property tests: flag cells and label tables as users' exports may spell them."""
from __future__ import annotations

import csv
import io

from hypothesis import given, settings
from hypothesis import strategies as st

from weldnet.core.flags import FLAGS, canonical_flag, format_flags, parse_flags
from weldnet.photos.ingest import (
    Entry,
    LabelRow,
    Rejection,
    check_row,
    check_rows,
    decode_labels,
    parse_label_table,
    photo_name,
)
from weldnet.photos.manifest import FORMULA_PREFIXES, original_cell, spreadsheet_cell

PADDING = st.text(alphabet=" \t", max_size=3)
relaxed = settings(deadline=None)  # no per-example time limit: no flaky failures on a loaded machine


@st.composite
def spelled(draw, flag: str) -> str:
    """A flag as a person might type it: any letter case, padded, inner spaces doubled."""
    words = [draw(st.sampled_from([w, w.lower(), w.upper(), w.swapcase()])) for w in flag.split()]
    inner = draw(st.sampled_from([" ", "  ", " \t"]))
    return draw(PADDING) + inner.join(words) + draw(PADDING)


@st.composite
def flag_cells(draw) -> tuple[str, list[str]]:
    """(cell text, the canonical flags it names in Table 1 order) with duplicates and empty parts."""
    chosen = draw(st.lists(st.sampled_from(FLAGS), max_size=6))
    parts = [draw(spelled(f)) for f in chosen]
    parts += draw(st.lists(PADDING, max_size=3))  # empty parts: ";;", trailing ";"
    parts = draw(st.permutations(parts))
    return ";".join(parts), [f for f in FLAGS if f in set(chosen)]


unknown_names = st.text(alphabet=st.characters(codec="utf-8", exclude_characters=";\r\n\x00"), min_size=1,
                        max_size=20).map(str.strip).filter(lambda s: s and canonical_flag(s) is None)


@relaxed
@given(flag_cells())
def test_parse_flags_ignores_case_whitespace_duplicates_and_empty_parts(cell):
    text, expected = cell
    assert parse_flags(text) == (expected, [])


@relaxed
@given(flag_cells())
def test_format_flags_round_trips_through_parse_flags(cell):
    known, _ = parse_flags(cell[0])
    assert parse_flags(format_flags(known)) == (known, [])
    assert format_flags(parse_flags(format_flags(known))[0]) == format_flags(known)


@relaxed
@given(st.lists(st.sampled_from(FLAGS), unique=True))
def test_format_flags_writes_table1_spelling_in_table1_order(flags):
    text = format_flags(flags)
    assert text.split(";") == [f for f in FLAGS if f in flags] or (text == "" and not flags)


@relaxed
@given(flag_cells(), st.lists(unknown_names, min_size=1, max_size=3))
def test_unknown_names_are_reported_once_each_and_do_not_hide_known_ones(cell, unknown):
    text, expected = cell
    known, found = parse_flags(";".join([text, *unknown, *unknown]))
    assert known == expected
    assert found == list(dict.fromkeys(unknown))


@relaxed
@given(st.text(alphabet=" \t;", max_size=10))
def test_blank_cells_mean_no_flag(text):
    assert parse_flags(text) == ([], [])


# ---- label tables --------------------------------------------------------------------------

# spaces around a name are part of it: " a.jpg" is read back as " a.jpg"
names = st.text(alphabet=st.characters(codec="utf-8", exclude_characters="\r\n\x00"), min_size=1, max_size=15)
rigs = st.sampled_from(["redbox", "bluebox", "RedBox", "BLUEBOX", " redbox ", "greenbox"])


@st.composite
def label_tables(draw):
    """(labels.csv bytes, the rows it holds as (image, rig, flags or None for a missing field))."""
    rows = []
    for _ in range(draw(st.integers(0, 8))):
        image = draw(names)
        rig = draw(rigs)
        flags = draw(st.one_of(st.none(), st.just(""), flag_cells().map(lambda c: c[0]), st.just("NaN")))
        rows.append((image, rig, flags))
    buf = io.StringIO(newline="")
    writer = csv.writer(buf, lineterminator=draw(st.sampled_from(["\n", "\r\n"])))
    writer.writerow(["image", "rig", "flags"])
    for image, rig, flags in rows:
        writer.writerow([image, rig] if flags is None else [image, rig, flags])
    encoding = draw(st.sampled_from(["utf-8", "utf-8-sig", "utf-16"]))
    return buf.getvalue().encode(encoding), rows


@settings(relaxed, max_examples=150)
@given(label_tables())
def test_label_tables_read_back_what_was_written(table):
    data, written = table
    parsed = parse_label_table(decode_labels(data))
    assert [(r.image, r.rig, r.flags) for r in parsed] == [(i, r.strip(), f) for i, r, f in written]
    assert [r.line for r in parsed] == list(range(2, 2 + len(written)))


@settings(relaxed, max_examples=150)
@given(label_tables())
def test_every_row_is_accepted_or_rejected_exactly_once(table):
    data, written = table
    parsed = parse_label_table(decode_labels(data))
    entries, rejections = check_rows(parsed)
    assert sorted([e.line for e in entries] + [r.line for r in rejections]) == [r.line for r in parsed]
    assert len({e.image for e in entries}) == len(entries)  # one manifest row per photo
    for entry in entries:
        row = parsed[entry.line - 2]
        assert row.flags is not None and row.flags.strip().lower() != "nan"
        assert entry.rig == row.rig.lower() and list(entry.flags) == parse_flags(row.flags)[0]
    accepted = {e.image for e in entries}
    for rejection in rejections:
        row = parsed[rejection.line - 2]
        if row.flags is None and row.rig.lower() in ("redbox", "bluebox") and photo_name(row) is not None:
            assert rejection.category in ("labels_unknown", "conflicting_rows")
    # a photo that any rejected row names never enters the manifest: its labels are in doubt
    doubted = {photo_name(row) for row in parsed if isinstance(check_row(row), Rejection)}
    assert not doubted & accepted


def test_blank_flags_are_a_photo_without_flag_and_missing_flags_are_unknown_labels():
    entries, rejections = check_rows([LabelRow(2, "a.jpg", "redbox", ""), LabelRow(3, "b.jpg", "redbox", None)])
    assert entries == [Entry(2, "a.jpg", "redbox", ())]
    assert [(r.line, r.category) for r in rejections] == [(3, "labels_unknown")]
    assert isinstance(rejections[0], Rejection) and "empty" in rejections[0].reason


# ---- cells a spreadsheet would evaluate ----------------------------------------------------

@relaxed
@given(st.text(max_size=20))
def test_spreadsheet_cells_never_start_a_formula_and_give_back_the_original(text):
    cell = spreadsheet_cell(text)
    assert not cell.startswith(FORMULA_PREFIXES)
    assert original_cell(cell) == text
    assert cell == text or cell == "'" + text
