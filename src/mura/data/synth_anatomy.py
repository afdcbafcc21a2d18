"""Procedural anatomy for synthetic radiographs: bones per body part, fractures, hardware.

Shapes are defined in a unit square (y down) and mapped to pixels with a per-view rotation, scale and
shift. The study's random generator fixes the anatomy and where the abnormality sits (so all views of a
study agree); the view's generator fixes the projection. Normal films get look-alike distractors
(joint spaces, growth plates, skin folds) so "a dark line across a bone" alone does not give the label.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

Point = tuple[float, float]


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


def _finger(x: float, base: float, length: float, width: float, angle: float = 0.0) -> list[Bone]:
    """Metacarpal-free finger: proximal, middle, distal phalanges with joint gaps between them."""
    bones, y, ratios = [], base, (0.45, 0.3, 0.25)
    dx, dy = math.sin(angle), -math.cos(angle)
    xs = x
    for i, ratio in enumerate(ratios):
        seg = length * ratio
        start = (xs, y)
        end = (xs + dx * seg * 0.86, y + dy * seg * 0.86)
        bones.append(Bone(start, end, width * (1 - 0.12 * i), 1.3, 1.25 if i < 2 else 1.0))
        xs, y = xs + dx * seg, y + dy * seg
    return bones


def _part_shapes(part: str, rng: np.random.Generator) -> list[Bone | Round | Poly]:
    j = lambda s=0.02: float(rng.uniform(-s, s))  # noqa: E731 - tiny jitter helper
    if part == "FOREARM":
        return [
            Bone((0.40 + j(), -0.1), (0.44 + j(), 1.1), 0.085 + j(0.01)),
            Bone((0.60 + j(), -0.1), (0.57 + j(), 1.1), 0.075 + j(0.01)),
        ]
    if part == "HUMERUS":
        return [
            Round((0.47 + j(), 0.08 + j()), 0.13, 0.12),
            Bone((0.48 + j(), 0.12), (0.5 + j(), 0.86), 0.12 + j(0.01), 1.2, 1.5),
            Bone((0.36 + j(), 0.9), (0.64 + j(), 0.9), 0.08, fracturable=False),
        ]
    if part == "SHOULDER":
        ribs = [
            Bone(
                (-0.05, 0.45 + k * 0.14),
                (0.35, 0.35 + k * 0.15 + j()),
                0.025,
                fracturable=False,
                density=0.45,
            )
            for k in range(4)
        ]
        return [
            *ribs,
            Poly(((0.18 + j(), 0.28), (0.38, 0.38 + j()), (0.3 + j(), 0.95), (0.02, 0.82 + j()))),
            Bone((0.02, 0.2 + j()), (0.78 + j(), 0.1 + j()), 0.06, fracturable=True),
            Round((0.47 + j(), 0.44 + j()), 0.14, 0.135),
            Bone((0.49 + j(), 0.5), (0.53 + j(), 1.12), 0.13 + j(0.01)),
        ]
    if part == "ELBOW":
        return [
            Bone((0.5 + j(), -0.12), (0.5 + j(), 0.42), 0.13 + j(0.01), 1.0, 1.4),
            Bone((0.34 + j(), 0.46), (0.66 + j(), 0.46), 0.1, fracturable=False),
            Round((0.61 + j(), 0.44 + j()), 0.06, 0.07),
            Bone((0.42 + j(), 0.55), (0.38 + j(), 1.12), 0.075, 1.5, 1.0),
            Bone((0.6 + j(), 0.5), (0.62 + j(), 1.12), 0.085, 1.3, 1.0),
        ]
    if part == "WRIST":
        carpals = [
            Round((0.36 + 0.095 * c + j(0.01), 0.5 + 0.09 * r + j(0.01)), 0.05, 0.045)
            for r in range(2)
            for c in range(4)
        ]
        metacarpals = [
            Bone((0.33 + 0.11 * k + j(), 0.4), (0.3 + 0.12 * k + j(), -0.1), 0.055, 1.3, 1.0)
            for k in range(4)
        ]
        return [
            *metacarpals,
            *carpals,
            Bone((0.41 + j(), 0.66), (0.38 + j(), 1.12), 0.16 + j(0.01), 1.25, 1.0),
            Bone((0.64 + j(), 0.68), (0.67 + j(), 1.12), 0.085, 1.2, 1.0),
        ]
    if part == "HAND":
        carpals = [
            Round((0.38 + 0.08 * c + j(0.01), 0.84 + 0.07 * r), 0.04, 0.035)
            for r in range(2)
            for c in range(4)
        ]
        shapes: list[Bone | Round | Poly] = [*carpals]
        for k in range(4):
            x0, x1 = 0.4 + 0.065 * k + j(0.01), 0.3 + 0.12 * k + j(0.01)
            shapes.append(Bone((x0, 0.78), (x1, 0.5), 0.05, 1.1, 1.35))
            shapes.extend(
                _finger(x1 + (x1 - 0.48) * 0.08, 0.46, 0.42 - 0.05 * abs(k - 1.3), 0.042, (x1 - 0.48) * 0.5)
            )
        shapes.append(Bone((0.36, 0.8), (0.22 + j(), 0.6), 0.055, 1.1, 1.3))
        shapes.extend(_finger(0.2, 0.57, 0.3, 0.045, -0.7))
        return shapes
    if part == "FINGER":
        side = 0.16 if rng.random() < 0.5 else 0.84
        return [
            Bone((0.5 + j(), 1.15), (0.5 + j(), 0.98), 0.16, 1.0, 1.4, fracturable=False),
            *_finger(0.5 + j(), 0.9, 0.9, 0.14 + j(0.01)),
            *[replace(b, density=0.6, fracturable=False) for b in _finger(side, 1.0, 0.8, 0.1)],
        ]
    raise ValueError(f"unknown body part {part!r}")


class _Canvas:
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

    def px(self, p: Point) -> Point:
        x, y = (p[0] - 0.5) * self.flip * self.squash, p[1] - 0.5
        x, y = x * self.cos - y * self.sin, x * self.sin + y * self.cos
        return (self.w / 2 + self.shift[0] + x * self.scale, self.h / 2 + self.shift[1] + y * self.scale)

    def length(self, d: float) -> float:
        return d * self.scale


def _capsule(draw: ImageDraw.ImageDraw, a: Point, b: Point, width: float, fill: int) -> None:
    draw.line([a, b], fill=fill, width=max(1, round(width)))
    r = width / 2
    for x, y in (a, b):
        draw.ellipse([x - r, y - r, x + r, y + r], fill=fill)


def _lerp(a: Point, b: Point, t: float) -> Point:
    return (a[0] + (b[0] - a[0]) * t, a[1] + (b[1] - a[1]) * t)


def _draw_bone(cv: _Canvas, bone: Bone, cortex: float, medulla: float, tissue: int) -> None:
    a, b = cv.px(bone.p0), cv.px(bone.p1)
    w = cv.length(bone.width)
    _capsule(cv.d_tissue, a, b, w * 2.6, tissue)
    c_val, m_val = int(cortex * bone.density), int(medulla * bone.density)
    _capsule(cv.d_bone, a, b, w, c_val)
    for end, bulge in ((a, bone.bulge0), (b, bone.bulge1)):
        if bulge > 1.0:
            r = w * bulge / 2
            cv.d_bone.ellipse([end[0] - r, end[1] - r, end[0] + r, end[1] + r], fill=c_val)
    _capsule(cv.d_bone, _lerp(a, b, 0.08), _lerp(a, b, 0.92), w * 0.5, m_val)


def _across(cv: _Canvas, bone: Bone, t: float, rng: np.random.Generator, span: float) -> list[Point]:
    """A jagged line across the bone at position t (fractures, growth plates)."""
    a, b = cv.px(bone.p0), cv.px(bone.p1)
    c = _lerp(a, b, t)
    length = math.dist(a, b) or 1.0
    ux, uy = (b[0] - a[0]) / length, (b[1] - a[1]) / length
    w = cv.length(bone.width)
    points = []
    for k in np.linspace(-span, span, 5):
        along = rng.uniform(-0.2, 0.2) * w
        points.append((c[0] - uy * k * w + ux * along, c[1] + ux * k * w + uy * along))
    return points


def _hardware(cv: _Canvas, bone: Bone, t: float, rng: np.random.Generator) -> None:
    a, b = cv.px(bone.p0), cv.px(bone.p1)
    w = cv.length(bone.width)
    length = math.dist(a, b) or 1.0
    nx, ny = -(b[1] - a[1]) / length, (b[0] - a[0]) / length
    side = w * 0.5 * (1 if rng.random() < 0.5 else -1)
    p, q = _lerp(a, b, max(0.05, t - 0.15)), _lerp(a, b, min(0.95, t + 0.15))
    if rng.random() < 0.7:  # plate with screws
        _capsule(
            cv.d_metal,
            (p[0] + nx * side, p[1] + ny * side),
            (q[0] + nx * side, q[1] + ny * side),
            max(3.0, w * 0.35),
            250,
        )
        for s in np.linspace(0.1, 0.9, int(rng.integers(3, 6))):
            c = _lerp(p, q, s)
            cv.d_metal.line(
                [
                    (c[0] + nx * side * 1.2, c[1] + ny * side * 1.2),
                    (c[0] - nx * side * 1.1, c[1] - ny * side * 1.1),
                ],
                fill=240,
                width=max(2, round(w * 0.14)),
            )
    else:  # a single screw or wire across the bone
        c = _lerp(a, b, t)
        ends = [(c[0] + nx * w * 0.8, c[1] + ny * w * 0.8), (c[0] - nx * w * 0.8, c[1] - ny * w * 0.8)]
        cv.d_metal.line(ends, fill=245, width=max(3, round(w * 0.2)))


def draw_anatomy(
    part: str, abnormal: bool, w: int, h: int, study_rng: np.random.Generator, view_rng: np.random.Generator
) -> np.ndarray:
    """Paint one view; returns float32 [h, w] in roughly 0..255 before contrast and noise."""
    shapes = _part_shapes(part, study_rng)
    flip = bool(study_rng.random() < 0.5)
    candidates = [i for i, s in enumerate(shapes) if isinstance(s, Bone) and s.fracturable]
    widths = np.array([shapes[i].width for i in candidates]) ** 2  # thick bones: visible abnormality
    target = int(study_rng.choice(candidates, p=widths / widths.sum()))
    kind = str(study_rng.choice(["line", "displaced", "hardware"], p=[0.35, 0.35, 0.3]))
    t = float(study_rng.uniform(0.3, 0.7))
    cv = _Canvas(w, h, view_rng, flip)
    background = view_rng.uniform(5, 30)
    tissue, cortex = int(view_rng.uniform(35, 70)), view_rng.uniform(110, 150)
    medulla = cortex * view_rng.uniform(0.55, 0.75)
    for i, shape in enumerate(shapes):
        if isinstance(shape, Round):
            c, rx, ry = cv.px(shape.center), cv.length(shape.rx), cv.length(shape.ry)
            cv.d_tissue.ellipse([c[0] - 2 * rx, c[1] - 2 * ry, c[0] + 2 * rx, c[1] + 2 * ry], fill=tissue)
            cv.d_bone.ellipse([c[0] - rx, c[1] - ry, c[0] + rx, c[1] + ry], fill=int(cortex * shape.density))
            cv.d_bone.ellipse(
                [c[0] - rx * 0.6, c[1] - ry * 0.6, c[0] + rx * 0.6, c[1] + ry * 0.6],
                fill=int(medulla * shape.density),
            )
        elif isinstance(shape, Poly):
            cv.d_bone.polygon([cv.px(p) for p in shape.points], fill=int(medulla * shape.density))
        elif abnormal and i == target and kind == "displaced":
            gap, shift = 0.07, float(view_rng.uniform(0.6, 1.0)) * shape.width
            dx, dy = shape.p1[0] - shape.p0[0], shape.p1[1] - shape.p0[1]
            norm = math.hypot(dx, dy) or 1.0
            off = (-dy / norm * shift, dx / norm * shift)
            near = _lerp(shape.p0, shape.p1, t - gap)
            far0 = _lerp(shape.p0, shape.p1, t + gap)
            _draw_bone(cv, replace(shape, p1=near, bulge1=1.0), cortex, medulla, tissue)
            _draw_bone(
                cv,
                replace(
                    shape,
                    p0=(far0[0] + off[0], far0[1] + off[1]),
                    p1=(shape.p1[0] + off[0] * 0.6, shape.p1[1] + off[1] * 0.6),
                    bulge0=1.0,
                ),
                cortex,
                medulla,
                tissue,
            )
        else:
            _draw_bone(cv, shape, cortex, medulla, tissue)
            if abnormal and i == target and kind == "line":
                width = max(cv.length(0.015), cv.length(shape.width) * view_rng.uniform(0.3, 0.5))
                cv.d_bone.line(_across(cv, shape, t, view_rng, 0.75), fill=0, width=round(width))
            elif view_rng.random() < 0.12:  # growth plate / overlap line: a fainter look-alike
                width = max(1.0, cv.length(shape.width) * view_rng.uniform(0.05, 0.1))
                cv.d_bone.line(
                    _across(cv, shape, float(view_rng.choice([0.12, 0.88])), view_rng, 0.6),
                    fill=int(medulla * 0.6),
                    width=round(width),
                )
            if abnormal and i == target and kind == "hardware":
                _hardware(cv, shape, t, view_rng)
    if view_rng.random() < 0.3:  # skin fold / cast edge: a line through the soft tissue
        a = (view_rng.uniform(0, w), 0.0)
        b = (view_rng.uniform(0, w), float(h))
        cv.d_tissue.line([a, b], fill=int(tissue * 1.4), width=max(1, round(min(w, h) * 0.01)))
    blur_t = ImageFilter.GaussianBlur(cv.length(0.02))
    blur_b = ImageFilter.GaussianBlur(view_rng.uniform(0.4, 1.2) * max(w, h) / 400)
    image = np.asarray(cv.tissue.filter(blur_t), dtype=np.float32) + background
    image += np.asarray(cv.bone.filter(blur_b), dtype=np.float32)
    return np.maximum(image, np.asarray(cv.metal.filter(blur_b), dtype=np.float32))
