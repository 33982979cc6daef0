"""The inspection flags of Table 1 and how a label cell is parsed.

Table 1 of the report counts each flag per rig: 113,865 Redbox photos and
13,790 Bluebox photos. A count of ``None`` means the rig never records that flag
("N/A" or "?" in the report).
"""
from __future__ import annotations

RIGS: tuple[str, ...] = ("redbox", "bluebox")

RIG_TOTALS: dict[str, int] = {"redbox": 113_865, "bluebox": 13_790}

# flag name: (redbox count, bluebox count)
TABLE1: dict[str, tuple[int | None, int | None]] = {
    "Fitting Proximity": (1_233, 32),
    "Inadequate Or Incorrect Clamping": (1_401, 83),
    "Joint Misaligned": (391, 35),
    "No Clamp Used": (8_041, 1_571),
    "No Ground Sheet": (30_015, 5_541),
    "No Insertion Depth Markings": (17_667, 897),
    "No Visible Evidence Of Scraping Or Peeling": (25_499, 1_410),
    "No Visible Hatch Markings": (28_155, 3_793),
    "Other": (251, 103),
    "Photo Does Not Show Enough Of Clamps": (5_059, 363),
    "Photo Does Not Show Enough Of Scrape Zones": (21_272, 2_545),
    "Soil Contamination High Risk": (6_541, 3),
    "Soil Contamination Low Risk": (10, None),
    "Soil Contamination Risk": (None, 529),
    "Unsuitable Photo": (2, None),
    "Unsuitable Scraping Or Peeling": (2_125, 292),
    "Water Contamination High Risk": (1_927, 9),
    "Water Contamination Low Risk": (3, 7),
    "Water Contamination Risk": (None, 296),
}

# Photos with no flag at all ("Perfect (no labels)" row of Table 1).
PERFECT: dict[str, int] = {"redbox": 49_039, "bluebox": 4_182}

FLAGS: tuple[str, ...] = tuple(TABLE1)

_BY_LOWER = {name.lower(): name for name in FLAGS}


def table1_share(rig: str) -> dict[str, float]:
    """Relative frequency of each flag on a rig: count / photos on that rig (0 when not recorded)."""
    column = RIGS.index(rig)
    total = RIG_TOTALS[rig]
    return {name: (counts[column] or 0) / total for name, counts in TABLE1.items()}


def canonical_flag(name: str) -> str | None:
    """The Table 1 spelling of a flag name, matched case-insensitively; None if unknown."""
    return _BY_LOWER.get(" ".join(name.split()).lower())


def parse_flags(cell: str | None) -> tuple[list[str], list[str]]:
    """Split a ``;``-separated flags cell into (known canonical flags, unknown names).

    Blank and missing cells both mean "no flag". Duplicates are collapsed and the
    known flags come back in Table 1 order.
    """
    if cell is None:
        return [], []
    known: set[str] = set()
    unknown: list[str] = []
    for part in str(cell).split(";"):
        part = part.strip()
        if not part:
            continue
        name = canonical_flag(part)
        if name is None:
            if part not in unknown:
                unknown.append(part)
        else:
            known.add(name)
    return [f for f in FLAGS if f in known], unknown


def format_flags(flags: list[str] | tuple[str, ...]) -> str:
    """The labels.csv spelling of a set of flags."""
    return ";".join(f for f in FLAGS if f in set(flags))
