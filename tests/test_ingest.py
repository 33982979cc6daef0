"""The pure ingest functions against hand-computed tables, and one clean end-to-end run."""
from __future__ import annotations

import contextlib
import io
import json

import pandas as pd
import pytest
from conftest import params_yaml
from PIL import Image

from stages import ingest as stage
from weldnet.core.config import DataError
from weldnet.core.flags import FLAGS
from weldnet.photos.images import PhotoInfo
from weldnet.photos.ingest import (
    MAX_FIELD,
    Entry,
    LabelRow,
    Rejection,
    build_manifest,
    check_row,
    check_rows,
    decode_labels,
    ingest_metrics,
    line_list,
    listed_paths,
    normalise_image_path,
    parse_label_table,
    rejection_summary,
    rejection_table,
    spacing_hints,
    unlisted_photos,
)
from weldnet.photos.manifest import read_manifest, spreadsheet_safe, write_manifest


def rows(text: str) -> list[LabelRow]:
    return parse_label_table(text)


def test_parse_reads_columns_in_any_order_and_ignores_extra_ones():
    table = rows("Flags , notes,IMAGE,rig\r\nNo Clamp Used,hello,a.jpg, redbox\r\n\r\n,,,\r\n,x,b.jpg,bluebox\r\n")
    assert table == [LabelRow(2, "a.jpg", "redbox", "No Clamp Used"), LabelRow(5, "b.jpg", "bluebox", "")]


def test_parse_tells_a_missing_flags_field_from_an_empty_one():
    table = rows("image,rig,flags\na.jpg,redbox,\nb.jpg,redbox\nc.jpg\n")
    assert [(r.image, r.rig, r.flags) for r in table] == [("a.jpg", "redbox", ""), ("b.jpg", "redbox", None),
                                                           ("c.jpg", None, None)]


def test_parse_keeps_quoted_commas_and_reports_extra_fields():
    table = rows('image,rig,flags\n"a,1.jpg",redbox,"Other"\nb.jpg,redbox,Other,No Clamp Used,\n')
    assert table[0].image == "a,1.jpg" and table[0].extra == ()
    assert table[1].extra == ("No Clamp Used",)


@pytest.mark.parametrize("data", [
    "image,rig,flags\na.jpg,redbox,\n".encode("utf-8-sig"),
    "image,rig,flags\r\na.jpg,redbox,\r\n".encode("utf-16"),
    b"image,rig,flags\ra.jpg,redbox,\r",
])
def test_bom_encodings_and_line_ends_are_all_read(data):
    assert rows(decode_labels(data)) == [LabelRow(2, "a.jpg", "redbox", "")]


def test_bad_quoting_is_a_data_error_naming_the_line():
    with pytest.raises(DataError, match="at line 2 .*quotes"):
        rows('image,rig,flags\na.jpg,redbox,"Other"x\nb.jpg,redbox,\n')


def test_an_unclosed_quote_does_not_swallow_the_rows_after_it():
    with pytest.raises(DataError, match="at line 4"):
        rows('image,rig,flags\na.jpg,redbox,"Other\nb.jpg,redbox,\nc.jpg,redbox,\n')


@pytest.mark.parametrize("image,expected", [
    ("images/a.jpg", "images/a.jpg"),
    ("images\\redbox\\a.jpg", "images/redbox/a.jpg"),
    ("./images//a.jpg", "images/a.jpg"),
    ("images/../b.jpg", "b.jpg"),
])
def test_paths_are_normalised(image, expected):
    assert normalise_image_path(image) == expected


@pytest.mark.parametrize("image", ["../a.jpg", "images/../../a.jpg", "/etc/passwd", "C:\\photos\\a.jpg", "\\\\server\\a.jpg", "."])
def test_paths_leaving_the_export_are_refused(image):
    with pytest.raises(ValueError):
        normalise_image_path(image)


@pytest.mark.parametrize("row,category", [
    (LabelRow(2, "", "redbox", ""), "bad_row"),
    (LabelRow(2, "a.jpg", None, None), "bad_row"),
    (LabelRow(2, "a.jpg", "redbox", "Other", ("x",)), "bad_row"),
    (LabelRow(2, "../a.jpg", "redbox", ""), "unsafe_path"),
    (LabelRow(2, "a.jpg", "greenbox", ""), "unknown_rig"),
    (LabelRow(2, "a.jpg", "redbox", None), "labels_unknown"),
    (LabelRow(2, "a.jpg", "redbox", " nan "), "labels_unknown"),
    (LabelRow(2, "a.jpg", "redbox", "NULL"), "labels_unknown"),
    (LabelRow(2, "a.jpg", "redbox", "Other;Clamp Missing"), "unknown_flag"),
])
def test_each_row_problem_gets_its_category(row, category):
    result = check_row(row)
    assert isinstance(result, Rejection) and result.category == category and result.line == 2


def test_a_good_row_becomes_a_canonical_entry():
    assert check_row(LabelRow(3, "./a.jpg", " BlueBox ".strip(), "other; NO CLAMP USED")) == \
        Entry(3, "a.jpg", "bluebox", ("No Clamp Used", "Other"))
    assert check_row(LabelRow(4, "b.jpg", "redbox", "  ")) == Entry(4, "b.jpg", "redbox", ())


def test_exact_duplicates_keep_the_first_and_conflicts_reject_all():
    table = [LabelRow(2, "a.jpg", "redbox", "Other"), LabelRow(3, "b.jpg", "redbox", ""),
             LabelRow(4, "./a.jpg", "redbox", "other"), LabelRow(5, "c.jpg", "redbox", ""),
             LabelRow(6, "c.jpg", "bluebox", ""), LabelRow(7, "a.jpg", "redbox", " Other ;")]
    entries, rejected = check_rows(table)
    assert [(e.line, e.image) for e in entries] == [(2, "a.jpg"), (3, "b.jpg")]
    assert sorted((r.line, r.category) for r in rejected) == [
        (4, "duplicate_row"), (5, "conflicting_rows"), (6, "conflicting_rows"), (7, "duplicate_row")]


def test_a_rejected_row_beside_an_accepted_one_rejects_both_and_keeps_its_own_reason():
    entries, rejected = check_rows([LabelRow(2, "a.jpg", "redbox", "No Clamp Usd"), LabelRow(3, "a.jpg", "redbox", ""),
                                    LabelRow(4, "b.jpg", "redbox", "")])
    assert [e.image for e in entries] == ["b.jpg"]
    assert [(r.line, r.category) for r in rejected] == [(2, "conflicting_rows"), (3, "conflicting_rows")]
    assert "did you mean 'No Clamp Used'" in rejected[0].reason
    assert "line 2 is rejected (unknown_flag)" in rejected[1].reason


def test_rows_are_grouped_by_the_file_they_name_when_the_stage_says_so():
    table = [LabelRow(2, "a.jpg", "redbox", ""), LabelRow(3, "link.jpg", "redbox", "Other"),
             LabelRow(4, "c.jpg", "redbox", ""), LabelRow(5, "copy.jpg", "redbox", "")]
    assert len(check_rows(table)[0]) == 4  # four names, four photos
    entries, rejected = check_rows(table, {"a.jpg": (1, 7), "link.jpg": (1, 7), "c.jpg": (1, 8), "copy.jpg": (1, 8)})
    assert [e.image for e in entries] == ["c.jpg", "copy.jpg"]  # same file, same labels: both names kept
    assert [(r.image, r.category) for r in rejected] == [("a.jpg", "conflicting_rows"), ("link.jpg", "conflicting_rows")]
    assert "lines 2, 3 name the same file ('a.jpg', 'link.jpg') with different" in rejected[0].reason


@pytest.mark.parametrize("lines,text", [([7], "line 7"), ([2, 3], "lines 2, 3"),
                                        (list(range(2, 4002)), "lines 2, 3, 4, 5, 6 and 3,995 more")])
def test_reasons_name_a_few_lines_and_count_the_rest(lines, text):
    assert line_list(lines) == text


def test_image_names_keep_their_spaces_and_near_misses_are_explained():
    assert rows('image,rig,flags\n" a.jpg ", redbox ,\n')[0] == LabelRow(2, " a.jpg ", "redbox", "")
    assert check_row(LabelRow(2, " a.jpg", "redbox", "")) == Entry(2, " a.jpg", "redbox", ())
    hinted = spacing_hints([Rejection(" a.jpg", "file not found", "missing_file", 2),
                            Rejection("a.jpg", "no row in labels.csv", "no_row"),
                            Rejection("b.jpg", "no row in labels.csv", "no_row")], ["a.jpg", "b.jpg"])
    assert "'a.jpg' is" in hinted[0].reason and "spaces" in hinted[0].reason
    assert "line 2 names ' a.jpg'" in hinted[1].reason
    assert hinted[2].reason == "no row in labels.csv"


def test_a_field_over_the_limit_marks_its_row_and_the_next_rows_keep_their_lines():
    limit = "x" * MAX_FIELD
    table = rows(f'image,rig,flags\na.jpg,redbox,{limit}\nb.jpg,redbox,{limit}x\n"c\n{limit}",redbox,\nd.jpg,redbox,\n')
    assert [(r.line, r.too_long) for r in table] == [(2, None), (3, ("flags", MAX_FIELD + 1)),
                                                     (4, ("image", MAX_FIELD + 2)), (6, None)]
    assert table[2].last_line == 5
    rejected = check_row(table[2])
    assert rejected.category == "field_too_long" and "lines 4-5" in rejected.reason and len(rejected.image) < 210


def test_manifest_cells_are_written_spreadsheet_safe_and_read_back_exactly(tmp_path):
    names = ["=1+1.jpg", "'a.jpg", "-b.jpg", "c.jpg"]
    manifest = build_manifest([Entry(i + 2, n, "redbox", ()) for i, n in enumerate(names)],
                              {n: PhotoInfo(4, 3, "ab") for n in names})
    write_manifest(manifest, tmp_path / "m.csv")
    assert pd.read_csv(tmp_path / "m.csv")["image"].tolist() == ["'=1+1.jpg", "''a.jpg", "'-b.jpg", "c.jpg"]
    assert read_manifest(tmp_path / "m.csv")["image"].tolist() == names
    table = spreadsheet_safe(rejection_table([Rejection("@x", "r", "no_row", None), Rejection("y", "+r", "bad_row", 2)]))
    assert table.values.tolist() == [["y", "'+r", "bad_row", 2], ["'@x", "r", "no_row", pd.NA]]


def test_only_unnamed_visible_photos_are_reported():
    files = ["a.jpg", "b.PNG", "sub/c.jpeg", "notes.txt", ".hidden.jpg", ".cache/d.jpg", "e.jpg"]
    listed = listed_paths([LabelRow(2, "./a.jpg", "redbox", ""), LabelRow(3, "e.jpg", "nobox", "")])
    assert [r.image for r in unlisted_photos(files, listed)] == ["b.PNG", "sub/c.jpeg"]


def test_manifest_has_one_row_per_readable_entry_and_0_1_flag_columns():
    entries = [Entry(2, "a.jpg", "redbox", ("No Clamp Used", "Other")), Entry(3, "b.jpg", "bluebox", ()),
               Entry(4, "c.jpg", "bluebox", ())]
    manifest = build_manifest(entries, {"a.jpg": PhotoInfo(640, 480, "aa"), "b.jpg": PhotoInfo(960, 1280, "bb")})
    assert list(manifest.columns) == ["image", "rig", "width", "height", "sha256", *FLAGS]
    assert manifest[["image", "rig", "width", "height", "sha256"]].values.tolist() == [
        ["a.jpg", "redbox", 640, 480, "aa"], ["b.jpg", "bluebox", 960, 1280, "bb"]]
    assert manifest.loc[0, list(FLAGS)].sum() == 2 and manifest.loc[0, "No Clamp Used"] == 1
    assert manifest.loc[1, list(FLAGS)].sum() == 0


def test_metrics_count_per_rig_with_no_flag_and_every_reason_key():
    manifest = build_manifest(
        [Entry(2, "a", "redbox", ("Other",)), Entry(3, "b", "redbox", ()), Entry(4, "c", "redbox", ("Other", "Joint Misaligned")),
         Entry(5, "d", "bluebox", ())],
        {k: PhotoInfo(1, 1, k) for k in "abcd"})
    rejected = [Rejection("x", "r", "no_row"), Rejection("y", "r", "no_row"), Rejection("z", "r", "too_large", 9)]
    metrics = ingest_metrics(manifest, rejected)
    assert metrics["images"] == {"redbox": 3, "bluebox": 1, "total": 4}
    assert metrics["flags"]["redbox"]["Other"] == 2
    assert metrics["flags"]["redbox"]["Joint Misaligned"] == 1
    assert metrics["flags"]["redbox"]["No flag"] == 1
    assert metrics["flags"]["bluebox"]["No flag"] == 1 and metrics["flags"]["bluebox"]["Other"] == 0
    assert metrics["rejected"]["total"] == 3
    assert metrics["rejected"]["by_reason"]["no_row"] == 2 and metrics["rejected"]["by_reason"]["too_large"] == 1
    assert sum(metrics["rejected"]["by_reason"].values()) == 3
    assert rejection_summary(rejected) == "3 rejected: 2 no_row, 1 too_large"


def test_metrics_of_an_empty_manifest_keep_their_keys():
    metrics = ingest_metrics(build_manifest([], {}), [])
    assert metrics["images"] == {"redbox": 0, "bluebox": 0, "total": 0}
    assert set(metrics["flags"]["bluebox"]) == {*FLAGS, "No flag"}


def test_rejection_table_lists_rows_by_line_then_unnamed_photos():
    table = rejection_table([Rejection("z.jpg", "r", "no_row"), Rejection("b", "r", "bad_row", 7),
                             Rejection("a", "r", "bad_row", 3)])
    assert table["image"].tolist() == ["a", "b", "z.jpg"]
    assert list(table.columns) == ["image", "reason", "category", "line"]


def test_unknown_category_is_a_programming_error():
    with pytest.raises(ValueError, match="unknown rejection category"):
        Rejection("a", "r", "oops")


def test_one_worker_and_two_workers_write_the_same_outputs(tmp_path):
    export = tmp_path / "export"
    (export / "img").mkdir(parents=True)
    lines = ["image,rig,flags"]
    for i in range(6):
        buf = io.BytesIO()
        Image.new("RGB", (32 + i, 24), (10 * i, 0, 0)).save(buf, "JPEG")
        (export / f"img/{i}.jpg").write_bytes(buf.getvalue())
        lines.append(f"img/{i}.jpg,{'redbox' if i % 2 else 'bluebox'},{'Other' if i % 3 == 0 else ''}")
    (export / "labels.csv").write_text("\n".join(lines) + "\n")
    outputs = []
    for workers in (1, 2):
        run = tmp_path / f"run{workers}"
        run.mkdir()
        (run / "params.yaml").write_text(params_yaml(ingest={"workers": workers}))
        with contextlib.chdir(run):
            stage.main(["--export", str(export), "--manifest", "m.csv", "--rejected", "r.csv", "--metrics", "i.json"])
        outputs.append(((run / "m.csv").read_text(), (run / "r.csv").read_text(), (run / "i.json").read_text()))
    assert outputs[0] == outputs[1]
    manifest = pd.read_csv(tmp_path / "run1/m.csv")
    assert manifest["image"].tolist() == [f"img/{i}.jpg" for i in range(6)]
    assert manifest["width"].tolist() == [32, 33, 34, 35, 36, 37]
    assert json.loads(outputs[0][2])["flags"]["bluebox"]["Other"] == 1  # img/0 (bluebox); img/3 is redbox

