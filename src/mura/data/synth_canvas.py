"""Drawing primitives for synthetic radiographs: shape records, the per-view canvas, bone painting.

Shapes live in a unit square (y down); `Canvas.px` maps them to pixels with the view's rotation, scale,
squash and shift. `Canvas.scale` is about the image side, so a length given in unit coordinates is a
fixed fraction of the image: that is what keeps an abnormality visible after resizing to 64 px.
`Canvas.mark` records the extent of what a finding draws, so a film knows its finding's box.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

Point = tuple[float, float]
MIN_SHOWN = 0.25  # a finding has a box when at least this share of its extent lies on the film


@dataclass(frozen=True)
class Bone:
    """A long bone: a capsule from p0 to p1, cortex around a darker medulla, optional bulging ends."""

    p0: Point
    p1: Point
    width: float
    bulge0: float = 1.0
    bulge1: float = 1.0
    fracturable: bool = True
    density: float = 1.0


@dataclass(frozen=True)
class Round:
    """A round bone (carpal, humeral head, olecranon)."""

    center: Point
    rx: float
    ry: float
    density: float = 1.0


@dataclass(frozen=True)
class Poly:
    """A flat bone outline (scapula)."""

    points: tuple[Point, ...]
    density: float = 0.6


@dataclass(frozen=True)
class Exposure:
    """Grey levels of one view's layers (vary per film like real exposure settings)."""

    background: float
    tissue: int
    cortex: float
    medulla: float


class Canvas:
    """Pixel mapping of one view plus the three layers we paint: soft tissue, bone, metal."""

    def __init__(self, w: int, h: int, view_rng: np.random.Generator, flip: bool) -> None:
        self.w, self.h = w, h
        angle = math.radians(view_rng.uniform(-25, 25))
        self.cos, self.sin = math.cos(angle), math.sin(angle)
        self.scale = math.sqrt(w * h) * view_rng.uniform(0.85, 1.15)
        self.squash = view_rng.uniform(0.75, 1.0)  # oblique / lateral projections look narrower
        self.shift = (view_rng.uniform(-0.06, 0.06) * w, view_rng.uniform(-0.06, 0.06) * h)
        self.flip = -1.0 if flip else 1.0
        self.tissue = Image.new("L", (w, h), 0)
        self.bone = Image.new("L", (w, h), 0)
        self.metal = Image.new("L", (w, h), 0)
        self.d_tissue, self.d_bone = ImageDraw.Draw(self.tissue), ImageDraw.Draw(self.bone)
        self.d_metal = ImageDraw.Draw(self.metal)
        self.marked: list[float] = []  # x0, y0, x1, y1 of everything `mark` was given, once any was

    def mark(self, points: list[Point], pad: float = 0.0) -> None:
        """Grow the finding's extent by `points`, each widened by `pad` px (a line's half width)."""
        xs, ys = [x for x, _ in points], [y for _, y in points]
        extent = [min(xs) - pad, min(ys) - pad, max(xs) + pad, max(ys) + pad]
        if self.marked:
            extent = [min(extent[0], self.marked[0]), min(extent[1], self.marked[1])] + [
                max(extent[2], self.marked[2]),
                max(extent[3], self.marked[3]),
            ]
        self.marked = extent

    def finding_box(self) -> tuple[float, float, float, float] | None:
        """The marked extent clipped to the film; None when under `MIN_SHOWN` of it is on the film (a
        finding drawn off the edge is not one a reader could box)."""
        if not self.marked:
            return None
        x0, y0 = max(0.0, self.marked[0]), max(0.0, self.marked[1])
        x1, y1 = min(float(self.w), self.marked[2]), min(float(self.h), self.marked[3])
        whole = (self.marked[2] - self.marked[0]) * (self.marked[3] - self.marked[1])
        shown = max(0.0, x1 - x0) * max(0.0, y1 - y0)
        return (x0, y0, x1, y1) if shown > 0 and shown >= MIN_SHOWN * whole else None

    def px(self, p: Point) -> Point:
        x, y = (p[0] - 0.5) * self.flip * self.squash, p[1] - 0.5
        x, y = x * self.cos - y * self.sin, x * self.sin + y * self.cos
        return (self.w / 2 + self.shift[0] + x * self.scale, self.h / 2 + self.shift[1] + y * self.scale)

    def length(self, d: float) -> float:
        return d * self.scale


def lerp(a: Point, b: Point, t: float) -> Point:
    return (a[0] + (b[0] - a[0]) * t, a[1] + (b[1] - a[1]) * t)


def axis(a: Point, b: Point) -> tuple[Point, Point]:
    """Unit vector from a to b and its normal."""
    length = math.dist(a, b) or 1.0
    u = ((b[0] - a[0]) / length, (b[1] - a[1]) / length)
    return u, (-u[1], u[0])


def offset(p: Point, *moves: tuple[Point, float]) -> Point:
    """p plus sum of direction * distance."""
    x, y = p
    for (dx, dy), d in moves:
        x, y = x + dx * d, y + dy * d
    return (x, y)


def capsule(draw: ImageDraw.ImageDraw, a: Point, b: Point, width: float, fill: int) -> None:
    draw.line([a, b], fill=fill, width=max(1, round(width)))
    r = width / 2
    for x, y in (a, b):
        draw.ellipse([x - r, y - r, x + r, y + r], fill=fill)


def spindle(c: Point, u: Point, n: Point, half_length: float, half_width: float, k: int = 16) -> list[Point]:
    """A rotated ellipse as a polygon (PIL's ellipses are axis-aligned): callus, swelling."""
    return [
        offset(c, (u, math.cos(phi) * half_length), (n, math.sin(phi) * half_width))
        for phi in np.linspace(0, 2 * math.pi, k, endpoint=False)
    ]


def paint_bone_px(
    cv: Canvas, a: Point, b: Point, w: float, ex: Exposure, density: float, bulges: tuple[float, float]
) -> None:
    """A long bone between pixel points a and b: tissue sleeve, cortex, bulging ends, medulla."""
    capsule(cv.d_tissue, a, b, w * 2.6, ex.tissue)
    c_val, m_val = int(ex.cortex * density), int(ex.medulla * density)
    capsule(cv.d_bone, a, b, w, c_val)
    for end, bulge in ((a, bulges[0]), (b, bulges[1])):
        if bulge > 1.0:
            r = w * bulge / 2
            cv.d_bone.ellipse([end[0] - r, end[1] - r, end[0] + r, end[1] + r], fill=c_val)
    if math.dist(a, b) > w * 0.6:
        capsule(cv.d_bone, lerp(a, b, 0.08), lerp(a, b, 0.92), w * 0.5, m_val)


def paint_bone(cv: Canvas, bone: Bone, ex: Exposure) -> None:
    paint_bone_px(
        cv,
        cv.px(bone.p0),
        cv.px(bone.p1),
        cv.length(bone.width),
        ex,
        bone.density,
        (bone.bulge0, bone.bulge1),
    )


def across(cv: Canvas, bone: Bone, t: float, rng: np.random.Generator, span: float) -> list[Point]:
    """A jagged line across the bone at position t (fracture lines, growth plates)."""
    a, b = cv.px(bone.p0), cv.px(bone.p1)
    u, n = axis(a, b)
    c, w = lerp(a, b, t), cv.length(bone.width)
    return [offset(c, (n, k * w), (u, rng.uniform(-0.2, 0.2) * w)) for k in np.linspace(-span, span, 5)]
