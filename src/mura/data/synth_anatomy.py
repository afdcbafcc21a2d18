"""Procedural anatomy for synthetic radiographs: the bones of each body part, composed into one view.

Shapes are defined in a unit square (y down) and mapped to pixels by `synth_canvas.Canvas` with a
per-view rotation, scale and shift. The study's random generator fixes the anatomy and the finding of
an abnormal study (`synth_findings`), so all views agree; the view's generator fixes the projection
and exposure. Normal films get look-alikes (joint spaces, growth plates, bone islands, skin folds), so
"a dark line across a bone" or "a bright spot" alone does not give the label.
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import NamedTuple

import numpy as np
from PIL import ImageFilter

from mura.data.synth_canvas import Bone, Canvas, Exposure, Poly, Round, across, paint_bone
from mura.data.synth_findings import draw_finding, plan_finding


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


def _distractors(cv: Canvas, bone: Bone, ex: Exposure, rng: np.random.Generator) -> None:
    """Normal look-alikes: a faint growth plate or overlap line near a bone end, a small bone island."""
    roll = rng.random()
    if roll < 0.12:
        width = max(1.0, cv.length(bone.width) * rng.uniform(0.05, 0.1))
        line = across(cv, bone, float(rng.choice([0.12, 0.88])), rng, 0.6)
        cv.d_bone.line(line, fill=int(ex.medulla * 0.6), width=round(width))
    elif roll < 0.16:
        c = cv.px(bone.p0 if rng.random() < 0.5 else bone.p1)
        c2 = cv.px(((bone.p0[0] + bone.p1[0]) / 2, (bone.p0[1] + bone.p1[1]) / 2))
        x, y = c[0] + (c2[0] - c[0]) * 0.3, c[1] + (c2[1] - c[1]) * 0.3
        r = cv.length(bone.width) * rng.uniform(0.12, 0.2)
        cv.d_bone.ellipse([x - r, y - r, x + r, y + r], fill=int(ex.cortex * 1.05))


class DrawnView(NamedTuple):
    """One painted view and where its finding is (the localisation ground truth `mura synth` writes)."""

    pixels: np.ndarray  # float32 [h, w] in roughly 0..255, before contrast and noise
    box: tuple[float, float, float, float] | None  # the finding's x0, y0, x1, y1 px; None: nothing shows
    kind: str  # the finding's kind (`synth_findings.KINDS`), "" on a normal view


def draw_anatomy(
    part: str, abnormal: bool, w: int, h: int, study_rng: np.random.Generator, view_rng: np.random.Generator
) -> DrawnView:
    """Paint one view, and mark where its finding is when it is abnormal."""
    shapes = _part_shapes(part, study_rng)
    flip = bool(study_rng.random() < 0.5)
    finding = plan_finding(shapes, study_rng)
    cv = Canvas(w, h, view_rng, flip)
    cortex = view_rng.uniform(110, 150)
    ex = Exposure(
        background=view_rng.uniform(5, 30),
        tissue=int(view_rng.uniform(35, 70)),
        cortex=cortex,
        medulla=cortex * view_rng.uniform(0.55, 0.75),
    )
    for i, shape in enumerate(shapes):
        if isinstance(shape, Round):
            c, rx, ry = cv.px(shape.center), cv.length(shape.rx), cv.length(shape.ry)
            cv.d_tissue.ellipse([c[0] - 2 * rx, c[1] - 2 * ry, c[0] + 2 * rx, c[1] + 2 * ry], fill=ex.tissue)
            cv.d_bone.ellipse(
                [c[0] - rx, c[1] - ry, c[0] + rx, c[1] + ry], fill=int(ex.cortex * shape.density)
            )
            cv.d_bone.ellipse(
                [c[0] - rx * 0.6, c[1] - ry * 0.6, c[0] + rx * 0.6, c[1] + ry * 0.6],
                fill=int(ex.medulla * shape.density),
            )
        elif isinstance(shape, Poly):
            cv.d_bone.polygon([cv.px(p) for p in shape.points], fill=int(ex.medulla * shape.density))
        elif abnormal and i == finding.target:
            draw_finding(cv, shape, finding, ex, view_rng)
        else:
            paint_bone(cv, shape, ex)
            _distractors(cv, shape, ex, view_rng)
    if view_rng.random() < 0.3:  # skin fold / cast edge: a line through the soft tissue
        a = (view_rng.uniform(0, w), 0.0)
        b = (view_rng.uniform(0, w), float(h))
        cv.d_tissue.line([a, b], fill=int(ex.tissue * 1.4), width=max(1, round(min(w, h) * 0.01)))
    blur_t = ImageFilter.GaussianBlur(cv.length(0.02))
    blur_b = ImageFilter.GaussianBlur(view_rng.uniform(0.4, 1.2) * max(w, h) / 400)
    image = np.asarray(cv.tissue.filter(blur_t), dtype=np.float32) + ex.background
    image += np.asarray(cv.bone.filter(blur_b), dtype=np.float32)
    pixels = np.maximum(image, np.asarray(cv.metal.filter(blur_b), dtype=np.float32))
    box = cv.finding_box()
    return DrawnView(pixels, box, finding.kind if box is not None else "")
