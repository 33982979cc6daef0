"""The README and docs/ cannot drift: generated tables match their sources, links and module paths resolve."""
from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
from conftest import ROOT

from weldnet.scoring import docs

FENCE = re.compile(r"^```.*?^```", re.DOTALL | re.MULTILINE)
INLINE_CODE = re.compile(r"`[^`\n]*`")
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
HEADING = re.compile(r"^#{1,6} +(.+?) *$", re.MULTILINE)


def _prose(text: str) -> str:
    return INLINE_CODE.sub("", FENCE.sub("", text))


def slugs(text: str) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens, repeats numbered."""
    seen: dict[str, int] = {}
    out = set()
    for heading in HEADING.findall(FENCE.sub("", text)):
        slug = re.sub(r"[^\w\- ]", "", heading.replace("`", "").lower()).replace(" ", "-")
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        out.add(slug if n == 0 else f"{slug}-{n}")
    return out


def broken_links(pages: list[Path]) -> list[str]:
    """'page: target' for each relative link whose file or heading anchor does not exist."""
    bad = []
    for page in pages:
        for target in LINK.findall(_prose(page.read_text(encoding="utf-8"))):
            if re.match(r"[a-z]+:", target):
                continue
            path, _, anchor = target.partition("#")
            file = (page.parent / path).resolve() if path else page
            if not file.exists():
                bad.append(f"{page.name}: {target} (no such file)")
            elif anchor and (file.suffix != ".md" or anchor not in slugs(file.read_text(encoding="utf-8"))):
                bad.append(f"{page.name}: {target} (no such heading)")
    return bad


def missing_modules(pages: list[Path], root: Path = ROOT) -> list[str]:
    """'page: name' for each `weldnet/...py` path or `weldnet.a.b[.attr]` name in code spans that does not exist."""
    bad = []
    for page in pages:
        spans = " ".join(INLINE_CODE.findall(page.read_text(encoding="utf-8")))
        for path in set(re.findall(r"weldnet/[\w/]+\.py", spans)):
            if not (root / path).is_file():
                bad.append(f"{page.name}: {path}")
        for name in set(re.findall(r"weldnet(?:\.\w+)+", spans)):
            parts = name.split(".")
            for k in range(len(parts), 1, -1):
                module = root.joinpath(*parts[:k])
                if module.is_dir() or module.with_suffix(".py").is_file():
                    rest = parts[k:]
                    source = module.with_suffix(".py").read_text() if module.with_suffix(".py").is_file() else ""
                    if rest and not re.search(rf"^(def|class) {rest[0]}\b|^{rest[0]} *[:=]", source, re.MULTILINE):
                        bad.append(f"{page.name}: {name} ({rest[0]} is not defined there)")
                    break
            else:
                bad.append(f"{page.name}: {name}")
    return bad


def _copy_docs(tmp_path: Path) -> Path:
    """The pages and every source of the generated regions, in a scratch repository root."""
    for path in docs.pages(ROOT):
        target = tmp_path / path.relative_to(ROOT)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, target)
    for region in docs.REGIONS.values():
        for source in region.sources:
            if (ROOT / source).is_file():
                (tmp_path / source).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(ROOT / source, tmp_path / source)
    return tmp_path


def test_the_committed_pages_match_their_sources(capsys):
    assert docs.main(["--check", "--root", str(ROOT)]) == 0, capsys.readouterr().err


def test_a_hand_edited_table_fails_the_check_and_the_command_restores_it(tmp_path, capsys):
    root = _copy_docs(tmp_path)
    readme = root / "README.md"
    original = readme.read_text()
    row = re.search(r"^\| baseline \| 0\.500 ± 0\.000 \|", original, re.MULTILINE)
    assert row, "the README's headline table lists the baseline"
    readme.write_text(original.replace(row.group(0), "| baseline | 0.510 ± 0.000 |", 1))

    assert docs.main(["--check", "--root", str(root)]) == 1
    err = capsys.readouterr().err
    assert "README.md: generated region 'summary' differs from metrics/summary.md" in err
    assert "python -m weldnet.scoring.docs" in err
    assert readme.read_text() != original             # --check changes nothing

    assert docs.main(["--root", str(root)]) == 0
    assert readme.read_text() == original
    assert docs.main(["--check", "--root", str(root)]) == 0


def test_an_edited_source_makes_every_page_that_shows_it_stale(tmp_path, capsys):
    root = _copy_docs(tmp_path)
    sweep = root / "docs" / "imbalance_sweep.json"
    rows = json.loads(sweep.read_text())
    rows[0]["per_class_accuracy"] = 0.123
    sweep.write_text(json.dumps(rows))
    assert docs.main(["--check", "--root", str(root)]) == 1
    assert "docs/results.md: generated region 'imbalance_sweep'" in capsys.readouterr().err
    docs.main(["--root", str(root)])
    assert "| 0.123 [" in (root / "docs" / "results.md").read_text()


def _page(root: Path, text: str) -> Path:
    (root / "docs").mkdir(parents=True, exist_ok=True)
    (root / "README.md").write_text(text)
    return root / "README.md"


def test_a_region_without_its_source_says_how_to_measure_it(tmp_path):
    page = _page(tmp_path, "# x\n\n<!-- generated:scale -->\n<!-- /generated:scale -->\n")
    assert docs.main(["--root", str(tmp_path)]) == 0
    text = page.read_text()
    assert "Not measured yet: run `python benchmarks/scale.py" in text
    assert "docs/scale.json" in text and "|" not in text


def test_the_scale_table_gives_cost_per_photo_and_its_ratio(tmp_path):
    stage = {"wall_s": 10.0, "peak_rss_mib": 500.0, "peak_pss_mib": 400.0, "load_start": 1.0, "load_end": 2.0}
    runs = {"reference": {"sizes": {"redbox": 3000, "bluebox": 3000}, "stages": [{**stage, "stage": "ingest", "cpu_s": 60.0}]},
            "scaled": {"sizes": {"redbox": 9000, "bluebox": 3000}, "stages": [{**stage, "stage": "ingest", "cpu_s": 132.0}]}}
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "scale.json").write_text(json.dumps(runs))
    page = _page(tmp_path, "<!-- generated:scale -->\n<!-- /generated:scale -->\n")
    docs.main(["--root", str(tmp_path)])
    # 60 s over 6,000 photos: 10 ms each; 132 s over 12,000: 11 ms; ratio 1.10
    assert "| ingest | 12000 | 10 | 132 | 11.00 | 10.00 | 1.10 | 500 | 400 | 1.0-2.0 |" in page.read_text()


def test_the_speed_ratios_table_shows_both_ratios_against_their_targets(tmp_path):
    times = {"wall_s": 1.0, "cpu_s": 1.0}
    report = {"cpus": 2, "load_average_start": [0.1, 0.1, 0.1], "load_average_end": [1.2, 1.0, 0.7],
              "training": {"arch": "small_cnn", "input_size": 64, "device": "cpu", "precision": "torch.bfloat16",
                           "photos": 1608, "epochs": 3, "batch_size": 64, "val": 600,
                           "loop": {**times, "wall_s": 3.57}, "bare": {**times, "wall_s": 3.39},
                           "ratio_wall": 0.951, "ratio_cpu": 0.9512},
              "preprocess": {"photos": 6000, "size": 256, "preprocess": {**times, "wall_s": 13.59},
                             "pillow": {**times, "wall_s": 54.5}, "startup": {**times, "wall_s": 0.43},
                             "ratio_wall": 4.0103, "ratio_cpu": 2.11}}
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "train_speed.json").write_text(json.dumps(report))
    page = _page(tmp_path, "<!-- generated:train_speed -->\n<!-- /generated:train_speed -->\n")
    docs.main(["--root", str(tmp_path)])
    text = page.read_text()
    assert "| 3.57 | 3.39 | 0.951 | 0.951 | at least 0.9 |" in text
    assert "6,000 JPEGs" in text and "start-up 0.43 s of it | 13.59 | 54.50 | 4.01 | 2.11 | at least 3 |" in text
    assert "load average 0.1 at the start and 1.2 at the end" in text


def test_the_stage_times_of_two_cpus_line_up_stage_by_stage(tmp_path):
    def run(cpu, walls, total):
        return {"command": "dvc repro", "total_s": total, "cpus": 2, "cpu": cpu, "load_start": [0.1, 0, 0],
                "load_end": [1.0, 0, 0], "stages": [{"stage": s, "wall_s": w} for s, w in walls.items()]}
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "stage_times.json").write_text(json.dumps(run("Xeon, AMX", {"audit": 75.0, "train@a": 30.0},
                                                                       120.0)))
    (tmp_path / "docs" / "stage_times_avx2.json").write_text(json.dumps(run("EPYC, AVX2", {"audit": 150.0,
                                                                                           "plots": 5.0}, 200.0)))
    page = _page(tmp_path, "<!-- generated:stage_times_cpus -->\n<!-- /generated:stage_times_cpus -->\n")
    docs.main(["--root", str(tmp_path)])
    text = page.read_text()
    assert "| stage | Xeon, AMX, 2 CPUs: wall s | EPYC, AVX2, 2 CPUs: wall s | ratio |" in text
    assert "| audit | 75.0 | 150.0 | 2.00 |" in text
    assert "| train@a | 30.0 |  |  |" in text and "| plots |  | 5.0 |  |" in text     # a stage one run lacks
    assert "| all stages | 105.0 | 155.0 | 1.48 |" in text and "| dvc repro | 120.0 | 200.0 | 1.67 |" in text


@pytest.mark.parametrize("text, message", [
    ("<!-- generated:nosuch -->\n<!-- /generated:nosuch -->\n", "unknown generated region 'nosuch'; valid: summary"),
    ("<!-- generated:scale -->\n", "region 'scale' is never closed"),
])
def test_a_broken_marker_is_named_in_one_line(tmp_path, capsys, text, message):
    _page(tmp_path, text)
    assert docs.main(["--check", "--root", str(tmp_path)]) == 2
    assert message in capsys.readouterr().err


def test_every_relative_link_in_the_readme_and_docs_resolves():
    assert broken_links(docs.pages(ROOT)) == []


def test_the_link_check_catches_a_missing_page_and_a_missing_heading(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.md").write_text("# A page\n\n## Its `loader` section\n")
    page = _page(tmp_path, "[ok](docs/a.md#its-loader-section) [gone](docs/b.md) [no](docs/a.md#nowhere) "
                           "`[code](docs/c.md)` [web](https://example.org)\n")
    assert broken_links([page]) == ["README.md: docs/b.md (no such file)", "README.md: docs/a.md#nowhere (no such heading)"]


def test_every_module_the_docs_name_exists():
    assert missing_modules(docs.pages(ROOT)) == []


def test_the_module_check_catches_a_moved_module(tmp_path):
    page = _page(tmp_path, "`weldnet/flat_module.py`, `weldnet.photos.manifest.no_such_function`, "
                           "`python -m weldnet.triage`\n")
    assert sorted(missing_modules([page])) == ["README.md: weldnet.photos.manifest.no_such_function "
                                               "(no_such_function is not defined there)",
                                               "README.md: weldnet/flat_module.py"]
