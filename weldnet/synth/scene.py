"""Drawing a synthetic pipe-weld photo whose inspection flags are known.

:func:`render_scene` turns (flags, rig, generator) into a PIL image. The scene is laid
out in *pipe units* (one main-pipe diameter): x runs along the main pipe from the centre
of the fitting, y across it. Along x, each side of the fitting holds

    fitting end (F) | scrape zone (S) | gap (g) | clamp band (B)
    with the insertion-depth line just past F and the hatch marks over the zone's outer edge.

A camera pose maps pipe units to pixels; it is chosen from how far the frame reaches
along the pipe on each side (:func:`frame_reach`), which is how the "Photo Does Not Show
Enough Of ..." flags are drawn: the frame stops before the clamp bands, or before one
scrape zone. Each flag is one visible element:

- No Clamp Used: no weld clamp (two metal bands with bolt lugs, joined by a rod along
  the pipe); Inadequate Or Incorrect Clamping: the clamp is askew, slid off, or a lone
  thin band; Photo Does Not Show Enough Of Clamps: the frame cuts both bands off.
- No Ground Sheet: bare soil under the joint instead of a plastic sheet.
- No Visible Evidence Of Scraping Or Peeling: the pipe by the fitting is not scraped
  (no pale, streaked band); Unsuitable Scraping Or Peeling: scraped in patches only;
  Photo Does Not Show Enough Of Scrape Zones: the frame cuts one zone off.
- No Visible Hatch Markings / No Insertion Depth Markings: the marker cross-hatching
  or the line at the fitting mouth is missing.
- Soil Contamination Low / (plain) / High Risk: more and larger mud splashes on the joint.
- Water Contamination Low / (plain) / High Risk: more and larger droplets on the joint,
  a few pixels wide, so that they nearly vanish at 256x256 (report section 6.2).
- Joint Misaligned: the two pipe halves meet the fitting at an angle and offset.
- Fitting Proximity: a second fitting on a pipe running close beside the joint.
- Unsuitable Photo: heavy blur, near darkness, or a thumb over the lens.
- Other: an odd object (tool, glove, can, cable) in the scene.

Distractors with no flag: a crossing pipe that may carry a non-weld clamp (report
section 2.0.2), a neighbour pipe, stones, grass, leaves, a shadow cast across the scene,
lighting gradients on the ground, exposure, a weld clamp mostly hidden under the pipe
(only its rod and band edges glint, as in the report's figure 1), and each rig's look
(report section 2.0.3): Redbox is 640x480, softer, noisier and warm; Bluebox is 1280x960
and sharp. Each part of the scene draws from its own child generator, so adding one
flag to a scene changes only that flag's element (the framing flags move the camera).
"""
from __future__ import annotations

import math
from collections.abc import Collection
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from PIL import Image, ImageChops, ImageDraw, ImageFilter

from weldnet.core.flags import FLAGS

FRAME: dict[str, tuple[int, int]] = {"redbox": (640, 480), "bluebox": (1280, 960)}


@dataclass(frozen=True)
class Tone:
    """A rig's colour: level v of channel c becomes clip((lift + contrast * (v - 128) + 128) * gains[c] * exposure)."""

    gains: tuple[float, float, float]
    lift: float
    contrast: float


# Part of each rig's definition (report section 2.0.3): Redbox is warm and washed out.
TONE: dict[str, Tone] = {
    "redbox": Tone(gains=(1.10, 0.97, 0.82), lift=14.0, contrast=0.85),
    "bluebox": Tone(gains=(0.97, 1.0, 1.04), lift=0.0, contrast=1.05),
}

NO_CLAMP = "No Clamp Used"
BAD_CLAMP = "Inadequate Or Incorrect Clamping"
CUT_CLAMP = "Photo Does Not Show Enough Of Clamps"
CUT_SCRAPE = "Photo Does Not Show Enough Of Scrape Zones"
NO_SCRAPE = "No Visible Evidence Of Scraping Or Peeling"
BAD_SCRAPE = "Unsuitable Scraping Or Peeling"
NO_SHEET = "No Ground Sheet"
NO_HATCH = "No Visible Hatch Markings"
NO_DEPTH = "No Insertion Depth Markings"
MISALIGNED = "Joint Misaligned"
PROXIMITY = "Fitting Proximity"
UNSUITABLE = "Unsuitable Photo"
OTHER = "Other"
SOIL = ("Soil Contamination Low Risk", "Soil Contamination Risk", "Soil Contamination High Risk")
WATER = ("Water Contamination Low Risk", "Water Contamination Risk", "Water Contamination High Risk")

# Child generators, one per part of the scene (order matters for reproducibility).
_PARTS = ("layout", "background", "clutter", "distractors", "pipe", "scrape", "marks", "fitting",
          "clamp", "soil", "water", "other", "camera")

_PIPE_COLOURS = ((222, 186, 40), (215, 105, 32), (38, 88, 176), (34, 34, 38), (58, 112, 66))
_FITTING_COLOURS = ((30, 30, 33), (52, 52, 56), (205, 98, 30), (218, 176, 42), (40, 66, 150))
_SHEET_COLOURS = ((36, 84, 160), (40, 112, 62), (30, 30, 34), (196, 92, 34), (122, 122, 128), (150, 40, 40))
_METALS = ((186, 190, 196), (160, 166, 166), (128, 132, 138), (172, 160, 128), (104, 106, 108), (140, 120, 96))
_PIPE_PROFILE = (0.55, 0.8, 1.0, 1.12, 0.95, 0.75, 0.52)  # shading across a cylinder
_METAL_PROFILE = (0.5, 0.8, 1.1, 1.38, 1.1, 0.8, 0.5)      # metal: a sharp glint line


@dataclass(frozen=True)
class Layout:
    """Positions along the main pipe, in pipe units, from the centre of the fitting."""

    fitting_half: float  # F
    scrape: float        # S
    gap: float           # g, scrape zone end to clamp band
    band: float          # B, clamp band width

    @property
    def scrape_end(self) -> float:
        return self.fitting_half + self.scrape

    @property
    def band_in(self) -> float:
        return self.scrape_end + self.gap

    @property
    def band_out(self) -> float:
        return self.band_in + self.band


def sample_layout(rng: np.random.Generator) -> Layout:
    return Layout(fitting_half=rng.uniform(0.9, 1.4), scrape=rng.uniform(0.6, 1.0),
                  gap=rng.uniform(0.3, 0.6), band=rng.uniform(0.25, 0.4))


def frame_reach(layout: Layout, rng: np.random.Generator, cut_clamps: bool, cut_scrape: bool
                ) -> tuple[float, float]:
    """How far the frame reaches along the pipe (left, right of the fitting centre), in pipe units.

    A side shows everything up to its clamp band plus a margin, unless it is cut:
    cut_clamps stops both sides between the scrape zone's end and 30% into the band;
    cut_scrape stops one random side within the first 30% of its scrape zone.
    """
    u = rng.random(4)  # always four draws, so the framing flags move only the camera
    shown = [layout.band_out + 0.2 + 2.3 * u[k] for k in range(2)]
    clamp_low, clamp_high = layout.scrape_end + 0.05, layout.band_in + 0.3 * layout.band
    clamp_cut = [clamp_low + (clamp_high - clamp_low) * u[k] for k in range(2)]
    scrape_cut = layout.fitting_half + 0.05 + (0.3 * layout.scrape - 0.05) * u[2]
    reach = clamp_cut if cut_clamps else shown
    if cut_scrape:
        reach[int(u[3] < 0.5)] = scrape_cut
    return reach[0], reach[1]


def visible_share(low: float, high: float, reach: float) -> float:
    """Share of the interval [low, high] (pipe units from the centre, one side) inside the frame."""
    return float(np.clip((reach - low) / (high - low), 0.0, 1.0))


class _Pose:
    """Pipe units (x along the axis, y across) to image pixels."""

    def __init__(self, cx: float, cy: float, angle: float, scale: float):
        self.cx, self.cy, self.angle, self.scale = cx, cy, angle, scale
        self._c, self._s = math.cos(angle) * scale, math.sin(angle) * scale

    def turned(self, dangle: float, dy: float = 0.0) -> _Pose:
        """The pose of a part rotated about the fitting centre and shifted across by dy."""
        nx, ny = -math.sin(self.angle) * dy * self.scale, math.cos(self.angle) * dy * self.scale
        return _Pose(self.cx + nx, self.cy + ny, self.angle + dangle, self.scale)

    def at(self, x: float, y: float) -> tuple[float, float]:
        return self.cx + self._c * x - self._s * y, self.cy + self._s * x + self._c * y

    def pts(self, xy) -> list[tuple[float, float]]:
        return [self.at(x, y) for x, y in xy]

    def quad(self, x0: float, x1: float, y0: float, y1: float) -> list[tuple[float, float]]:
        return self.pts(((x0, y0), (x1, y0), (x1, y1), (x0, y1)))


def _shade(colour, factor: float) -> tuple[int, int, int]:
    return tuple(int(min(255, max(0, c * factor))) for c in colour)


def _mix(a, b, t: float) -> tuple[int, int, int]:
    return tuple(int(round(x + (y - x) * t)) for x, y in zip(a, b))


def _jitter(rng: np.random.Generator, colour, amount: float = 0.12) -> tuple[int, int, int]:
    return _shade(colour, rng.uniform(1 - amount, 1 + amount))


def _cylinder(draw: ImageDraw.ImageDraw, pose: _Pose, x0: float, x1: float, radius: float, colour,
              profile=_PIPE_PROFILE) -> None:
    """A shaded cylinder along x from x0 to x1, as strips across it."""
    edges = np.linspace(-radius, radius, len(profile) + 1)
    for k, factor in enumerate(profile):
        draw.polygon(pose.quad(x0, x1, edges[k], edges[k + 1]), fill=_shade(colour, factor))


def _blob(rng: np.random.Generator, pose: _Pose, x: float, y: float, r: float, n: int = 9,
          stretch: float = 1.0) -> list[tuple[float, float]]:
    angles = np.sort(rng.uniform(0, 2 * math.pi, n))
    radii = r * rng.uniform(0.6, 1.3, n)
    turn = rng.uniform(0, math.pi)
    pts = []
    for a, rr in zip(angles, radii):
        u, v = rr * stretch * math.cos(a), rr * math.sin(a)
        pts.append((x + u * math.cos(turn) - v * math.sin(turn), y + u * math.sin(turn) + v * math.cos(turn)))
    return pose.pts(pts)


def _camera_pose(rng: np.random.Generator, width: int, height: int, reach: tuple[float, float]) -> _Pose:
    """Place the pipe axis through the frame so that it spans exactly ``reach`` on each side."""
    angle = math.radians(rng.uniform(-65, 65))
    ux, uy = math.cos(angle), math.sin(angle)
    offset = rng.uniform(-0.2, 0.2) * height
    px, py = width / 2 - uy * offset, height / 2 + ux * offset
    t_low, t_high = -math.inf, math.inf
    for p, u, size in ((px, ux, width), (py, uy, height)):
        if abs(u) > 1e-9:
            a, b = (0 - p) / u, (size - p) / u
            t_low, t_high = max(t_low, min(a, b)), min(t_high, max(a, b))
    left, right = reach
    scale = (t_high - t_low) / (left + right)
    t_centre = t_low + left * scale
    return _Pose(px + ux * t_centre, py + uy * t_centre, angle, scale)


def _background(rng: np.random.Generator, width: int, height: int, sheet_under_joint: bool,
                joint: tuple[float, float], light: Image.Image) -> Image.Image:
    """Soil texture, with a plastic ground sheet under the joint or (rarely) only in a corner.

    Drawn at quarter resolution, lit by ``light`` (a quarter-resolution "L" map), then upscaled:
    the ground is slightly out of focus, and lighting costs nothing at full resolution.
    """
    w4, h4 = width // 4, height // 4
    coarse = Image.fromarray((rng.random((h4 // 10 + 2, w4 // 10 + 2)) * 255).astype(np.uint8))
    fine = Image.fromarray((rng.random((h4 // 3, w4 // 3)) * 255).astype(np.uint8))
    v = (0.65 * np.asarray(coarse.resize((w4, h4), Image.BICUBIC), dtype=np.float32)
         + 0.35 * np.asarray(fine.resize((w4, h4), Image.BILINEAR), dtype=np.float32)) / 255.0
    dark = np.array(_jitter(rng, (72, 52, 34), 0.25), dtype=np.float32)
    pale = np.array(_jitter(rng, (156, 120, 84), 0.2), dtype=np.float32)
    soil = Image.fromarray((dark + v[..., None] * (pale - dark)).astype(np.uint8))

    corner_piece = not sheet_under_joint and rng.random() < 0.2
    if sheet_under_joint or corner_piece:
        colour = _jitter(rng, _SHEET_COLOURS[rng.integers(len(_SHEET_COLOURS))])
        sheet = Image.new("RGB", (w4, h4), colour)
        folds = ImageDraw.Draw(sheet)
        for _ in range(int(rng.integers(2, 6))):
            x0, x1 = rng.uniform(-0.2, 1.2, 2) * w4
            spread = rng.uniform(0.03, 0.12) * w4
            folds.polygon([(x0, -5), (x0 + spread, -5), (x1 + spread, h4 + 5), (x1, h4 + 5)],
                          fill=_shade(colour, rng.uniform(0.7, 1.25)))
        sheet = sheet.filter(ImageFilter.GaussianBlur(2))
        mask = Image.new("L", (w4, h4), 0)
        jx, jy = joint[0] / 4, joint[1] / 4
        if corner_piece:
            cx, cy = rng.choice([0, w4]), rng.choice([0, h4])
            a, b = rng.uniform(0.15, 0.35) * w4, rng.uniform(0.15, 0.35) * h4
            tri = [(cx, cy), (abs(cx - a), cy), (cx, abs(cy - b))]
            if math.hypot(jx - cx, jy - cy) > max(a, b) + 0.1 * w4:
                ImageDraw.Draw(mask).polygon(tri, fill=255)
        elif rng.random() < 0.55:
            mask.paste(255, (0, 0, w4, h4))
        else:  # the sheet's edge crosses the frame, the joint stays on the sheet
            angle = rng.uniform(0, 2 * math.pi)
            nx, ny = math.cos(angle), math.sin(angle)
            edge = rng.uniform(0.12, 0.45) * w4  # distance from the joint to the sheet's edge
            ex, ey = jx + nx * edge, jy + ny * edge
            far = 4 * (w4 + h4)
            ImageDraw.Draw(mask).polygon([(ex - ny * far, ey + nx * far), (ex + ny * far, ey - nx * far),
                                          (ex + ny * far - nx * far, ey - nx * far - ny * far),
                                          (ex - ny * far - nx * far, ey + nx * far - ny * far)], fill=255)
        soil = Image.composite(sheet, soil, mask)
    soil = ImageChops.multiply(soil, Image.merge("RGB", [light] * 3))
    return soil.resize((width, height), Image.BILINEAR)


def _ground_clutter(draw: ImageDraw.ImageDraw, rng: np.random.Generator, width: int, height: int, unit: float
                    ) -> None:
    """Grain, stones and grass on the ground (drawn before any pipe)."""
    n = int(rng.integers(60, 160))
    xs, ys = rng.uniform(0, width, n), rng.uniform(0, height, n)
    rs, tones = rng.uniform(0.6, 2.2, n) * unit, rng.uniform(0.5, 1.4, n)
    for x, y, r, t in zip(xs, ys, rs, tones):
        draw.ellipse((x - r, y - r, x + r, y + r), fill=_shade((110, 86, 60), t))
    for _ in range(int(rng.integers(0, 8))):
        x, y, r = rng.uniform(0, width), rng.uniform(0, height), rng.uniform(4, 18) * unit
        draw.ellipse((x - r, y - 0.7 * r, x + r, y + 0.7 * r), fill=_jitter(rng, (128, 122, 112), 0.3))
    for _ in range(int(rng.integers(0, 3))):  # a tuft of grass at the frame edge
        x, y = rng.choice([rng.uniform(0, width), rng.choice([0, width])]), rng.uniform(0, height)
        for _ in range(int(rng.integers(5, 15))):
            dx, dy = rng.uniform(-30, 30) * unit, rng.uniform(-45, -10) * unit
            draw.line((x, y, x + dx, y + dy), fill=_jitter(rng, (70, 120, 48), 0.3), width=max(1, round(2 * unit)))


def _leaves(draw: ImageDraw.ImageDraw, rng: np.random.Generator, pose: _Pose, count: int) -> None:
    for _ in range(count):
        x, y = rng.uniform(-5, 5), rng.uniform(-3, 3)
        colour = _jitter(rng, ((92, 122, 50), (128, 92, 44), (150, 128, 60))[rng.integers(3)], 0.2)
        draw.polygon(_blob(rng, pose, x, y, rng.uniform(0.08, 0.22), n=7, stretch=2.0), fill=colour)


def _side_pipe(draw: ImageDraw.ImageDraw, rng: np.random.Generator, pose: _Pose, metal) -> None:
    """A pipe crossing the main one away from the joint; half the time it carries a non-weld clamp."""
    side = rng.choice([-1.0, 1.0])
    x_cross = side * rng.uniform(3.0, 5.5)
    cross = _Pose(*pose.at(x_cross, 0.0), pose.angle + math.pi / 2 + math.radians(rng.uniform(-25, 25)),
                  pose.scale)
    radius = rng.uniform(0.25, 0.45)
    colour = _jitter(rng, _PIPE_COLOURS[rng.integers(len(_PIPE_COLOURS))])
    _cylinder(draw, cross, -20, 20, radius, colour)
    if rng.random() < 0.6:
        y = rng.choice([-1.0, 1.0]) * rng.uniform(0.9, 2.2)
        band = rng.uniform(0.08, 0.2)
        _cylinder(draw, cross, y - band, y + band, radius * 1.12, metal, _METAL_PROFILE)
        draw.polygon(cross.quad(y - band * 0.7, y + band * 0.7, -radius * 1.12, -radius * 1.5), fill=_shade(metal, 0.8))


def _neighbour_pipe(draw: ImageDraw.ImageDraw, rng: np.random.Generator, pose: _Pose, fitting_colour,
                    with_fitting: bool, toward: float) -> None:
    """A pipe running beside the main one; with a fitting next to the joint for Fitting Proximity."""
    y = toward * rng.uniform(1.15, 1.7)
    radius = rng.uniform(0.28, 0.42)
    colour = _jitter(rng, _PIPE_COLOURS[rng.integers(len(_PIPE_COLOURS))])
    beside = pose.turned(math.radians(rng.uniform(-6, 6)), y)
    _cylinder(draw, beside, -30, 30, radius, colour)
    if with_fitting:
        x, half = rng.uniform(-1.2, 1.2), rng.uniform(0.5, 0.9)
        colour = _jitter(rng, fitting_colour if rng.random() < 0.6 else _FITTING_COLOURS[rng.integers(5)])
        _cylinder(draw, beside, x - half, x + half, radius * 1.35, colour)
        for end in (x - half, x + half - 0.08):
            draw.polygon(beside.quad(end, end + 0.08, -radius * 1.35, radius * 1.35), fill=_shade(colour, 0.6))
        if rng.random() < 0.5:  # a branch outlet: the neighbour fitting is a tee
            draw.polygon(beside.quad(x - 0.25, x + 0.25, -radius * 1.35, -radius * 2.6), fill=_shade(colour, 0.85))


def _scrape_zones(draw: ImageDraw.ImageDraw, rng: np.random.Generator, poses, layout: Layout, pipe_colour,
                  state: str) -> None:
    """Pale, streaked bands where the pipe skin was peeled; 'patchy' scrapes only parts of them."""
    pale = _mix(pipe_colour, _jitter(rng, (205, 202, 190), 0.06), rng.uniform(0.45, 0.65))
    x0, x1 = layout.fitting_half, layout.scrape_end
    for side, pose in poses.items():
        if state == "patchy":
            for _ in range(int(rng.integers(1, 4))):
                a = rng.uniform(x0, x1 - 0.15)
                b = min(x1, a + rng.uniform(0.1, 0.4))
                c = rng.uniform(-0.5, 0.3)
                d = min(0.5, c + rng.uniform(0.15, 0.5))
                draw.polygon(pose.quad(side * a, side * b, c, d), fill=_shade(pale, rng.uniform(0.85, 1.05)))
            continue
        _cylinder(draw, pose, side * x0, side * x1, 0.5, pale)
        for x in rng.uniform(x0, x1, int(rng.integers(6, 14))):
            draw.line(pose.pts(((side * x, -0.5), (side * x, 0.5))), fill=_shade(pale, rng.uniform(0.8, 1.15)),
                      width=max(1, round(pose.scale * 0.012)))


def _marks(draw: ImageDraw.ImageDraw, rng: np.random.Generator, poses, layout: Layout, ink,
           hatch: bool, depth: bool) -> None:
    """Marker lines: the insertion-depth line at each fitting mouth, cross-hatching over each zone's edge."""
    width = max(1, round(next(iter(poses.values())).scale * rng.uniform(0.022, 0.04)))
    for side, pose in poses.items():
        if depth:
            x = side * (layout.fitting_half + rng.uniform(0.08, 0.22))
            draw.line(pose.pts(((x, -0.48), (x, 0.48))), fill=ink, width=width)
        if hatch:
            start, stop = layout.scrape_end - 0.12, layout.scrape_end + rng.uniform(0.25, 0.4)
            step = rng.uniform(0.1, 0.16)
            for x in np.arange(start, stop - 0.2, step):
                for a, b in (((x, -0.42), (x + 0.2, 0.42)), ((x + 0.2, -0.42), (x, 0.42))):
                    draw.line(pose.pts(((side * a[0], a[1]), (side * b[0], b[1]))), fill=ink, width=width)


def _fitting(draw: ImageDraw.ImageDraw, rng: np.random.Generator, pose: _Pose, layout: Layout, colour) -> None:
    """The electrofusion coupler: a wide sleeve with darker mouths, two terminal pins and a label."""
    half, radius = layout.fitting_half, rng.uniform(0.6, 0.7)
    _cylinder(draw, pose, -half, half, radius, colour)
    for end in (-half, half - 0.1):
        draw.polygon(pose.quad(end, end + 0.1, -radius, radius), fill=_shade(colour, 0.62))
    up = rng.choice([-1.0, 1.0])
    for x in (-half + 0.3, half - 0.3):
        draw.polygon(pose.quad(x - 0.1, x + 0.1, up * (radius - 0.05), up * (radius + 0.22)),
                     fill=_shade(colour, 0.8))
        draw.polygon(pose.quad(x - 0.07, x + 0.07, up * (radius + 0.18), up * (radius + 0.24)),
                     fill=_shade(colour, 1.4) if max(colour) > 80 else (140, 140, 140))
    if rng.random() < 0.7:
        paper = _jitter(rng, ((225, 225, 215), (230, 210, 90))[rng.integers(2)], 0.05)
        x, w = rng.uniform(-0.3, 0.3) * half, rng.uniform(0.25, 0.45)
        draw.polygon(pose.quad(x - w, x + w, -0.3, 0.15), fill=paper)
        for k in range(3):
            y = -0.22 + 0.11 * k
            draw.line(pose.pts(((x - w * 0.8, y), (x + w * rng.uniform(0.2, 0.8), y))), fill=(60, 60, 60),
                      width=max(1, round(pose.scale * 0.02)))


def _band(draw: ImageDraw.ImageDraw, pose: _Pose, x0: float, x1: float, metal, lug_side: float,
          tilt: float = 0.0, dy: float = 0.0) -> None:
    """One clamp band around the pipe (optionally tilted/slid), with a bolted lug."""
    centre = 0.5 * (x0 + x1)
    band = _Pose(*pose.at(centre, dy), pose.angle + tilt, pose.scale)
    half = 0.5 * abs(x1 - x0)
    _cylinder(draw, band, -half, half, 0.58, metal, _METAL_PROFILE)
    draw.polygon(band.quad(-half * 0.8, half * 0.8, lug_side * 0.56, lug_side * 0.82), fill=_shade(metal, 0.85))
    bx, by = band.at(0.0, lug_side * 0.76)
    r = max(1.5, band.scale * 0.06)
    draw.ellipse((bx - r, by - r, bx + r, by + r), fill=_shade(metal, 0.5), outline=_shade(metal, 1.3))


def _rod(draw: ImageDraw.ImageDraw, a: tuple[float, float], b: tuple[float, float], metal, scale: float) -> None:
    draw.line((a, b), fill=_shade(metal, 0.85), width=max(2, round(scale * 0.07)))
    draw.line((a, b), fill=_shade(metal, 1.4), width=max(1, round(scale * 0.022)))


def _clamp(draw: ImageDraw.ImageDraw, rng: np.random.Generator, poses, layout: Layout, metal, state: str) -> None:
    """The weld clamp: bands beyond both scrape zones, joined by one or two rods along the pipe.

    state 'ok', or an Inadequate Or Incorrect Clamping variant: 'askew' (bands tilted),
    'slid' (one band slid off the pipe) or 'single' (a lone hose clip, the wrong clamp).
    """
    lug = rng.choice([-1.0, 1.0])
    x0, x1 = layout.band_in, layout.band_out
    if state == "single":
        side = int(rng.choice([-1, 1]))
        x = side * rng.uniform(x0, x1)
        _band(draw, poses[side], x - 0.06, x + 0.06, metal, lug)
        return
    tilt, shift = {-1: 0.0, 1: 0.0}, {-1: 0.0, 1: 0.0}
    if state == "askew":
        for side in rng.permutation([-1, 1])[: int(rng.integers(1, 3))]:
            tilt[int(side)] = math.radians(rng.uniform(18, 35)) * rng.choice([-1, 1])
    elif state == "slid":
        side = int(rng.choice([-1, 1]))
        tilt[side] = math.radians(rng.uniform(20, 45)) * rng.choice([-1, 1])
        shift[side] = rng.choice([-1, 1]) * rng.uniform(0.45, 0.8)
    for side in (-1, 1):
        _band(draw, poses[side], side * x0, side * x1, metal, lug, tilt[side], shift[side])
    middle = 0.5 * (x0 + x1)
    for rod_y in ([lug * 0.62, -lug * 0.62] if rng.random() < 0.4 else [lug * 0.62]):
        _rod(draw, poses[-1].at(-middle, rod_y + shift[-1]), poses[1].at(middle, rod_y + shift[1]), metal,
             poses[1].scale)


def _mud(draw: ImageDraw.ImageDraw, rng: np.random.Generator, pose: _Pose, layout: Layout, level: int) -> None:
    """Mud on the joint: level 0 (low), 1 (plain risk), 2 (high) sets how many splashes and how big."""
    count = (int(rng.integers(2, 5)), int(rng.integers(4, 9)), int(rng.integers(9, 17)))[level]
    size = ((0.04, 0.1), (0.08, 0.18), (0.12, 0.3))[level]
    reach = layout.scrape_end + 0.3
    mud = _jitter(rng, (84, 62, 40), 0.15)
    for _ in range(count):
        x, y = rng.uniform(-reach, reach), rng.uniform(-0.55, 0.55)
        draw.polygon(_blob(rng, pose, x, y, rng.uniform(*size), stretch=rng.uniform(1, 2.5)),
                     fill=_shade(mud, rng.uniform(0.75, 1.2)))


def _droplets(draw: ImageDraw.ImageDraw, rng: np.random.Generator, pose: _Pose, layout: Layout, level: int,
              unit: float, pipe_colour, fitting_colour) -> None:
    """Water beads on the joint, 1.5-4 px across at 640x480: more and larger with the risk level."""
    count = (int(rng.integers(4, 9)), int(rng.integers(8, 19)), int(rng.integers(18, 41)))[level]
    radius = ((0.8, 1.5), (0.8, 1.7), (1.1, 2.2))[level]
    reach = layout.scrape_end
    for _ in range(count):
        x, y = rng.uniform(-reach, reach), rng.uniform(-0.5, 0.5)
        under = fitting_colour if abs(x) < layout.fitting_half else pipe_colour
        px, py = pose.at(x, y)
        r = rng.uniform(*radius) * unit
        draw.ellipse((px - r, py - 0.85 * r, px + r, py + 0.85 * r), fill=_shade(under, 0.8),
                     outline=_shade(under, 0.5))
        h = max(0.5, r / 3)
        draw.ellipse((px - r / 2 - h, py - r / 2 - h, px - r / 2 + h, py - r / 2 + h), fill=(245, 245, 245))


def _odd_object(draw: ImageDraw.ImageDraw, rng: np.random.Generator, pose: _Pose, metal) -> None:
    """Something that does not belong: a spanner, a glove, a drinks can or a loose cable."""
    kind = rng.integers(4)
    x, y = rng.uniform(-2.5, 2.5), rng.choice([-1.0, 1.0]) * rng.uniform(0.3, 2.0)
    item = _Pose(*pose.at(x, y), rng.uniform(0, 2 * math.pi), pose.scale * rng.uniform(0.8, 1.6))
    if kind == 0:
        draw.polygon(item.quad(-0.9, 0.6, -0.07, 0.07), fill=_shade(metal, 0.9))
        draw.polygon(_blob(rng, item, 0.75, 0.0, 0.2, n=8), fill=_shade(metal, 1.1))
    elif kind == 1:
        colour = _jitter(rng, ((230, 140, 20), (40, 90, 200), (220, 210, 40))[rng.integers(3)])
        draw.polygon(_blob(rng, item, 0.0, 0.0, 0.35, n=10, stretch=1.4), fill=colour)
        for k in range(4):
            draw.polygon(item.quad(0.35, 0.75, -0.24 + 0.13 * k, -0.16 + 0.13 * k), fill=_shade(colour, 0.9))
    elif kind == 2:
        colour = _jitter(rng, ((200, 30, 30), (30, 150, 60), (230, 230, 230))[rng.integers(3)])
        _cylinder(draw, item, -0.3, 0.3, 0.17, colour)
        draw.polygon(item.quad(0.3, 0.36, -0.17, 0.17), fill=(200, 200, 205))
    else:
        colour = _jitter(rng, ((200, 30, 30), (30, 60, 200), (230, 200, 30))[rng.integers(3)])
        steps = np.cumsum(rng.normal(0, 0.35, (8, 2)), axis=0)
        draw.line(item.pts(steps), fill=colour, width=max(2, round(item.scale * 0.06)), joint="curve")


def _lighting(rng: np.random.Generator, width: int, height: int) -> Image.Image:
    """A soft light map on the ground (0..255 = dark..full): a gradient across the frame."""
    w, h = max(8, width // 4), max(6, height // 4)
    angle = rng.uniform(0, 2 * math.pi)
    yy, xx = np.mgrid[0:h, 0:w]
    ramp = (xx / w - 0.5) * math.cos(angle) + (yy / h - 0.5) * math.sin(angle)
    low = rng.uniform(0.6, 0.95)
    light = Image.fromarray((255 * (low + (1 - low) * (ramp - ramp.min()) / np.ptp(ramp))).astype(np.uint8))
    return light.resize((width, height), Image.BILINEAR)


def _cast_shadow(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    """The shadow of something out of frame (a person, the trench wall) across part of the scene."""
    width, height = img.size
    w, h = max(8, width // 8), max(6, height // 8)
    mask = Image.new("L", (w, h), 0)
    ImageDraw.Draw(mask).polygon([(rng.uniform(-0.3, 1.3) * w, rng.uniform(-0.3, 1.3) * h) for _ in range(4)],
                                 fill=255)
    mask = mask.filter(ImageFilter.BoxBlur(1)).resize((width, height), Image.BILINEAR)
    factor = rng.uniform(0.45, 0.7)
    img.paste(img.point([int(v * factor) for v in range(256)] * 3), mask=mask)
    return img


@lru_cache(maxsize=4)
def _noise_bank(width: int, height: int, sigma: float) -> Image.Image:
    """Sensor noise (128 + N(0, sigma) per channel) a quarter larger than the frame; crops vary per photo."""
    rng = np.random.default_rng(20140826)
    noise = 128 + sigma * rng.standard_normal((height + height // 4, width + width // 4, 3), dtype=np.float32)
    return Image.fromarray(np.clip(np.rint(noise), 0, 255).astype(np.uint8))


def _tone_table(tone: Tone, exposure: float) -> list[int]:
    v = np.arange(256, dtype=np.float64)
    base = tone.lift + tone.contrast * (v - 128) + 128
    return [int(x) for g in tone.gains for x in np.clip(np.rint(base * g * exposure), 0, 255)]


def render_scene(flags: Collection[str], rig: str, rng: np.random.Generator, blur: float = 0.0,
                 noise: float = 0.0) -> Image.Image:
    """An RGB photo of a pipe weld showing exactly ``flags`` (Table 1 names), in ``rig``'s look.

    ``blur`` is the rig's defocus (box blur) radius in output pixels, varied by +-25% per
    photo; ``noise`` the standard deviation of sensor noise in 8-bit levels.
    """
    flags = frozenset(flags)
    unknown = sorted(flags - set(FLAGS))
    if unknown:
        raise ValueError(f"unknown flags {unknown}; valid: {', '.join(FLAGS)}")
    if rig not in FRAME:
        raise ValueError(f"unknown rig '{rig}'; valid: {', '.join(FRAME)}")
    width, height = FRAME[rig]
    unit = height / 480
    part = dict(zip(_PARTS, rng.spawn(len(_PARTS))))

    r = part["layout"]
    layout = sample_layout(r)
    pose = _camera_pose(r, width, height, frame_reach(layout, r, CUT_CLAMP in flags, CUT_SCRAPE in flags))
    pipe_colour = _jitter(r, _PIPE_COLOURS[r.integers(len(_PIPE_COLOURS))])
    fitting_colour = _jitter(r, _FITTING_COLOURS[r.integers(len(_FITTING_COLOURS))])
    metal = _jitter(r, _METALS[r.integers(len(_METALS))], 0.08)
    inks = ((235, 235, 228), (240, 210, 40)) if max(pipe_colour) < 120 else ((22, 22, 26), (30, 40, 150), (170, 20, 20))
    ink = inks[r.integers(len(inks))]
    if MISALIGNED in flags:
        kink, offset = math.radians(r.uniform(7, 14)) * r.choice([-1, 1]), r.uniform(-0.12, 0.12)
    else:
        kink, offset = math.radians(r.uniform(-1, 1)), 0.0
    poses = {-1: pose.turned(-kink / 2), 1: pose.turned(kink / 2, offset)}
    across = np.subtract(pose.at(0, 1), (pose.cx, pose.cy))
    toward_centre = 1.0 if np.dot(across, (width / 2 - pose.cx, height / 2 - pose.cy)) >= 0 else -1.0

    light = _lighting(part["camera"], width // 4, height // 4)
    img = _background(part["background"], width, height, NO_SHEET not in flags, (pose.cx, pose.cy), light)
    draw = ImageDraw.Draw(img)
    _ground_clutter(draw, part["clutter"], width, height, unit)

    r = part["distractors"]
    if PROXIMITY in flags or r.random() < 0.12:
        _neighbour_pipe(draw, r, pose, fitting_colour, PROXIMITY in flags, toward_centre)
    if r.random() < 0.35:
        _side_pipe(draw, r, pose, _jitter(r, _METALS[r.integers(len(_METALS))], 0.08))

    clamp_rng = part["clamp"]
    clamp_state = None
    if NO_CLAMP not in flags:
        clamp_state = (("askew", "slid", "single")[clamp_rng.integers(3)] if BAD_CLAMP in flags
                       else ("under" if clamp_rng.random() < 0.25 else "ok"))
    if clamp_state == "under":  # mostly hidden by the pipe: only band edges and the rod glint
        _clamp(draw, clamp_rng, poses, layout, metal, "ok")

    for side, side_pose in poses.items():
        _cylinder(draw, side_pose, 0.0, side * 40.0, 0.5, pipe_colour)
    r = part["pipe"]
    if r.random() < 0.3:  # a few specks of dirt on the pipe, well away from the joint
        for _ in range(int(r.integers(1, 4))):
            x = r.choice([-1, 1]) * r.uniform(layout.band_out + 0.3, layout.band_out + 3)
            draw.polygon(_blob(r, pose, x, r.uniform(-0.4, 0.4), r.uniform(0.03, 0.06)), fill=(90, 68, 46))

    if NO_SCRAPE not in flags:
        _scrape_zones(draw, part["scrape"], poses, layout, pipe_colour, "patchy" if BAD_SCRAPE in flags else "full")
    _marks(draw, part["marks"], poses, layout, ink, hatch=NO_HATCH not in flags, depth=NO_DEPTH not in flags)
    _fitting(draw, part["fitting"], pose, layout, fitting_colour)
    if clamp_state not in (None, "under"):
        _clamp(draw, clamp_rng, poses, layout, metal, clamp_state)
    for level, name in enumerate(SOIL):
        if name in flags:
            _mud(draw, part["soil"], pose, layout, level)
    for level, name in enumerate(WATER):
        if name in flags:
            _droplets(draw, part["water"], pose, layout, level, unit, pipe_colour, fitting_colour)
    _leaves(draw, part["clutter"], pose, int(part["clutter"].integers(0, 4)))
    if OTHER in flags:
        _odd_object(draw, part["other"], pose, metal)

    r = part["camera"]
    if r.random() < 0.35:
        img = _cast_shadow(img, r)
    exposure = r.uniform(0.85, 1.2)
    radius = blur * r.uniform(0.75, 1.25)
    if UNSUITABLE in flags:
        kind = r.integers(3)
        if kind == 0:  # badly out of focus
            radius = r.uniform(4, 8) * unit
        elif kind == 1:  # far too dark
            exposure *= r.uniform(0.12, 0.25)
        else:  # a thumb over the lens
            w, h = width // 8, height // 8
            mask = Image.new("L", (w, h), 0)
            cx, cy = r.choice([0, w]), r.uniform(0.3, 1.0) * h
            rx, ry = r.uniform(0.3, 0.55) * w, r.uniform(0.4, 0.7) * h
            ImageDraw.Draw(mask).ellipse((cx - rx, cy - ry, cx + rx, cy + ry), fill=255)
            mask = mask.filter(ImageFilter.GaussianBlur(2)).resize((width, height), Image.BILINEAR)
            img = Image.composite(Image.new("RGB", (width, height), _jitter(r, (150, 92, 72))), img, mask)
    if radius > 0.05:  # defocus: a box filter, close to a lens's disc-shaped blur and cheap
        img = img.filter(ImageFilter.BoxBlur(radius))
    if noise > 0:
        bank = _noise_bank(width, height, float(noise))
        x, y = int(r.integers(bank.width - width + 1)), int(r.integers(bank.height - height + 1))
        img = ImageChops.add(img, bank.crop((x, y, x + width, y + height)), 1.0, -128)
    return img.point(_tone_table(TONE[rig], exposure))
