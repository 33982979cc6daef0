"""Rebuild .dvc/plots/offline.html, the page `dvc plots show` writes, with vega, vega-lite and vega-embed inlined.

    python scripts/vendor_vega.py            # needs npm and the npm registry, nothing else

DVC's own page loads the three libraries from a CDN, so without internet every
vega chart is blank. This page carries their minified builds from npm instead, so
it works offline wherever it is written (dvc_plots/, any -o folder, a CI artifact).
The versions are pinned below; the licences of the inlined code and of the packages
bundled in it go to .dvc/plots/THIRD_PARTY.md. .dvc/config points DVC at the page
(`plots.html_template`).
"""
from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / ".dvc" / "plots" / "offline.html"
NOTICE = ROOT / ".dvc" / "plots" / "THIRD_PARTY.md"
PACKAGES = {"vega": "5.33.1", "vega-lite": "5.23.0", "vega-embed": "6.29.0"}
BUILDS = {"vega": "build/vega.min.js", "vega-lite": "build/vega-lite.min.js", "vega-embed": "build/vega-embed.min.js"}
COPYRIGHT = "Copyright (c) 2015-2023, University of Washington Interactive Data Lab. All rights reserved."

SKELETON = """<!DOCTYPE html>
<html>
<head>
<meta charset="utf-8">
{{refresh_tag}}
<title>weldnet: dvc plots</title>
<!-- {versions}, minified builds from npm, inlined so that this page needs no network.
     BSD-3-Clause, {copyright} Licences of these and of the code bundled in them:
     .dvc/plots/THIRD_PARTY.md in the weldnet repository. Rebuilt by scripts/vendor_vega.py. -->
{scripts}
<style>
  body {{ font-family: system-ui, sans-serif; margin: 16px 24px; color: #222; }}
  body > div {{ margin: 8px 0 36px 0; }}
  img {{ max-width: 100%; }}
  .vega-embed {{ display: block; }}
</style>
</head>
<body>
{{plot_divs}}
</body>
</html>
"""


def build(folder: Path) -> None:
    spec = [f"{name}@{version}" for name, version in PACKAGES.items()]
    subprocess.run(["npm", "install", "--prefix", str(folder), "--no-audit", "--no-fund", "--ignore-scripts",
                    *spec], check=True)
    modules = folder / "node_modules"
    scripts = []
    for name, build_path in BUILDS.items():
        code = (modules / name / build_path).read_text(encoding="utf-8")
        code = "\n".join(line for line in code.splitlines() if not line.startswith("//# sourceMappingURL="))
        for bad in ("</script", "<!--", "{plot_divs}", "{scripts}", "{refresh_tag}"):
            if bad in code:
                sys.exit(f"{name} {PACKAGES[name]} contains '{bad}', which cannot be inlined here")
        scripts.append(f"<script>/* {name} {PACKAGES[name]} */\n{code}\n</script>")
    versions = ", ".join(f"{name} {version}" for name, version in PACKAGES.items())
    PAGE.write_text(SKELETON.format(versions=versions, copyright=COPYRIGHT, scripts="\n".join(scripts)),
                    encoding="utf-8")

    installed = []
    for manifest in sorted(modules.glob("**/package.json")):
        if manifest.parent.parent.name not in ("node_modules",) and manifest.parent.parent.parent.name != "node_modules":
            continue
        meta = json.loads(manifest.read_text(encoding="utf-8"))
        if "name" in meta and "version" in meta and manifest.parent.name in meta["name"]:
            installed.append((meta["name"], meta["version"], meta.get("license", "see package")))
    licence = (modules / "vega-lite" / "LICENSE").read_text(encoding="utf-8").split("\n", 2)[2].strip()
    rows = "\n".join(f"| {n} | {v} | {lic} |" for n, v, lic in sorted(set(installed)))
    NOTICE.write_text("""# Third-party code in .dvc/plots/offline.html

`offline.html` is the page template of `dvc plots show` (`plots.html_template` in
.dvc/config). It inlines the minified browser builds of

| package | version | file | licence |
|---|---|---|---|
""" + "\n".join(f"| {n} | {v} | `{BUILDS[n]}` | BSD-3-Clause |" for n, v in PACKAGES.items()) + f"""

installed from the npm registry by `python scripts/vendor_vega.py`, which rebuilds the
page (the source-map comment is the only line removed). These builds bundle code of
some of the packages npm installed with them, listed with their licences below.

## vega, vega-lite, vega-embed: BSD-3-Clause

{COPYRIGHT}

{licence}

## Packages installed with them

| package | version | licence |
|---|---|---|
{rows}

The d3 modules (d3-*) are ISC-licensed, Copyright Mike Bostock: "Permission to use,
copy, modify, and/or distribute this software for any purpose with or without fee is
hereby granted, provided that the above copyright notice and this permission notice
appear in all copies."
""", encoding="utf-8")
    print(f"wrote {PAGE.relative_to(ROOT)} ({PAGE.stat().st_size // 1024} KiB) and {NOTICE.relative_to(ROOT)}")


def main() -> None:
    with tempfile.TemporaryDirectory() as folder:
        build(Path(folder))


if __name__ == "__main__":
    main()
