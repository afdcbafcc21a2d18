"""Abnormalities for synthetic radiographs: fractures with a gap, displacement and angulation,
comminuted fragments, healing callus, and metal fixation (plate + screws, nail, wires).

A study draws one `Finding` (so all of its views agree); each view re-projects it with a little
jitter. Every size has a floor given as a fraction of the image (`Canvas.length` of a unit length)
besides its size relative to the bone, so the finding still spans a few pixels when a 512 px film is
resized to 64 px: thin hand bones get a fracture a 64 px CNN can see, thick bones a proportionate one.
Each finding marks on the canvas the extent of what it draws (`Canvas.mark`): the fracture gap with
the fragment ends beside it, loose fragments, the callus, the fixation metal and its fracture line.
That is the film's localisation ground truth. Soft-tissue swelling is left out of it, as a reader
boxes the bony finding, not the swelling around it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from mura.data.synth_canvas import (
    Bone,
    Canvas,
    Exposure,
    Point,
    across,
    axis,
    capsule,
    lerp,
    offset,
    paint_bone,
    paint_bone_px,
    spindle,
)

KINDS = ("break", "comminuted", "callus", "hardware")
KIND_P = (0.35, 0.2, 0.2, 0.25)
HARDWARE = ("plate", "nail", "wires")
HARDWARE_P = (0.5, 0.25, 0.25)
SWELLING_P = {"break": 0.85, "comminuted": 0.85, "callus": 0.4, "hardware": 0.3}
MIN_GAP = 0.05  # fracture gap floor, as a fraction of the image side (~3 px at 64 px)
MIN_PIECE = 0.04  # fragment / callus / metal width floor, same unit
MIN_SWELLING = 0.05  # how far swelling reaches beyond the normal soft-tissue sleeve, same unit


@dataclass(frozen=True)
class Finding:
    """What is wrong with one bone of a study, in sizes relative to that bone."""

    kind: str  # one of KINDS
    target: int  # index of the affected Bone in the study's shape list
    t: float  # position along the bone (0 = p0, 1 = p1)
    gap: float  # fracture gap, in bone widths
    shift: float  # lateral displacement of the distal fragment, in bone widths (signed)
    angle: float  # angulation of the distal fragment, degrees (signed)
    hardware: str  # one of HARDWARE when kind == "hardware", else ""
    side: float  # +1 / -1: the side of the bone a plate or callus bulge sits on
    swelling: bool  # soft-tissue swelling around the site (acute fractures mostly)


def plan_finding(shapes: list, study_rng: np.random.Generator) -> Finding:
    """Pick the affected bone (thick bones more often) and the finding; uses only the study's rng."""
    candidates = [i for i, s in enumerate(shapes) if isinstance(s, Bone) and s.fracturable]
    widths = np.array([shapes[i].width for i in candidates]) ** 2
    target = int(study_rng.choice(candidates, p=widths / widths.sum()))
    kind = str(study_rng.choice(KINDS, p=KIND_P))
    sign = lambda: 1.0 if study_rng.random() < 0.5 else -1.0  # noqa: E731 - tiny helper
    displaced = kind == "break"
    return Finding(
        kind=kind,
        target=target,
        t=float(study_rng.uniform(0.3, 0.7)),
        gap=float(study_rng.uniform(0.5, 0.9) if displaced else study_rng.uniform(0.3, 0.5)),
        shift=sign() * float(study_rng.uniform(0.6, 1.2) if displaced else study_rng.uniform(0.1, 0.4)),
        angle=sign() * float(study_rng.uniform(12, 30) if displaced else study_rng.uniform(0, 10)),
        hardware=str(study_rng.choice(HARDWARE, p=HARDWARE_P)) if kind == "hardware" else "",
        side=sign(),
        swelling=bool(study_rng.random() < SWELLING_P[kind]),
    )


def _rotate(u: Point, radians: float) -> Point:
    c, s = math.cos(radians), math.sin(radians)
    return (u[0] * c - u[1] * s, u[0] * s + u[1] * c)


def _break(cv: Canvas, bone: Bone, f: Finding, ex: Exposure, rng: np.random.Generator) -> tuple[Point, float]:
    """Two fragments with a jagged gap; the distal one shifted and angulated. Returns (site, gap px)."""
    a, b = cv.px(bone.p0), cv.px(bone.p1)
    u, n = axis(a, b)
    w, c = cv.length(bone.width), lerp(a, b, f.t)
    gap = max(f.gap * w, cv.length(MIN_GAP)) * rng.uniform(0.85, 1.15)
    shift = f.shift * w * rng.uniform(0.6, 1.0)  # the projection changes how displaced it looks
    u2 = _rotate(u, math.radians(f.angle * cv.flip * rng.uniform(0.6, 1.0)))
    end = offset(c, (u, -gap / 2))
    paint_bone_px(cv, a, end, w, ex, bone.density, (bone.bulge0, 1.0))
    d0 = offset(c, (u2, gap / 2), (n, shift))
    d1 = offset(d0, (u2, math.dist(c, b) - gap / 2))
    paint_bone_px(cv, d0, d1, w, ex, bone.density, (1.0, bone.bulge1))
    half = w * 0.6 + abs(shift)
    edge = [
        offset(c, (n, k), (u, -gap / 2 + rng.uniform(-0.25, 0.25) * gap)) for k in np.linspace(-half, half, 6)
    ]
    far = [
        offset(c, (n, k), (u, gap / 2 + rng.uniform(-0.25, 0.25) * gap)) for k in np.linspace(half, -half, 6)
    ]
    cv.d_bone.polygon(edge + far, fill=0)  # jagged, flat fracture ends (joints have round ones)
    n2 = (-u2[1], u2[0])
    cv.mark(edge + far)
    # each fragment end: from where its medulla stops to the tip of its rounded cap, the full width
    for inner, tip, normal in (
        (lerp(a, end, 0.92), offset(end, (u, w / 2)), n),
        (lerp(d0, d1, 0.08), offset(d0, (u2, -w / 2)), n2),
    ):
        cv.mark([offset(p, (normal, k)) for p in (inner, tip) for k in (-w / 2, w / 2)])
    return c, gap


def _fragments(
    cv: Canvas, bone: Bone, site: Point, gap: float, ex: Exposure, rng: np.random.Generator
) -> None:
    a, b = cv.px(bone.p0), cv.px(bone.p1)
    u, n = axis(a, b)
    w = cv.length(bone.width)
    for _ in range(int(rng.integers(3, 6))):
        size = max(w * rng.uniform(0.45, 0.7), cv.length(MIN_PIECE))
        center = offset(site, (u, rng.uniform(-0.5, 0.5) * gap), (n, rng.uniform(-0.9, 0.9) * w))
        corners = [
            offset(center, (_rotate(u, phi), size * rng.uniform(0.35, 0.6)))
            for phi in np.sort(rng.uniform(0, 2 * math.pi, int(rng.integers(3, 5))))
        ]
        cv.d_bone.polygon(corners, fill=int(ex.cortex * bone.density * rng.uniform(0.9, 1.05)))
        cv.mark(corners)


def _callus(cv: Canvas, bone: Bone, f: Finding, ex: Exposure, rng: np.random.Generator) -> None:
    """A healing fracture: a fusiform bony bulge around the site with a faint line through it."""
    paint_bone(cv, bone, ex)
    a, b = cv.px(bone.p0), cv.px(bone.p1)
    u, n = axis(a, b)
    w, c = cv.length(bone.width), lerp(a, b, f.t)
    half_width = max(w * rng.uniform(1.0, 1.3), w / 2 + cv.length(MIN_PIECE))
    bulge_c = offset(c, (n, f.side * w * 0.15))
    bulge = spindle(bulge_c, u, n, half_width * rng.uniform(1.6, 2.2), half_width)
    cv.d_bone.polygon(bulge, fill=int(ex.cortex * bone.density * 0.92))
    line = across(cv, bone, f.t, rng, 1.0)
    line_width = max(1, round(max(0.15 * w, cv.length(0.01))))
    cv.d_bone.line(line, fill=int(ex.medulla * 0.45), width=line_width)
    cv.mark(bulge)
    cv.mark(line, line_width / 2)


def _hardware(cv: Canvas, bone: Bone, f: Finding, ex: Exposure, rng: np.random.Generator) -> None:
    """Fixation metal over a reduced fracture (the fracture line still shows in most views)."""
    paint_bone(cv, bone, ex)
    a, b = cv.px(bone.p0), cv.px(bone.p1)
    u, n = axis(a, b)
    w, c = cv.length(bone.width), lerp(a, b, f.t)
    if rng.random() < 0.6:
        line = across(cv, bone, f.t, rng, 0.7)
        line_width = max(1, round(max(0.12 * w, cv.length(0.008))))
        cv.d_bone.line(line, fill=0, width=line_width)
        cv.mark(line, line_width / 2)
    metal = int(rng.uniform(245, 256))
    screw_w = max(1, round(max(0.18 * w, cv.length(0.018))))
    if f.hardware == "plate":
        half = math.dist(a, b) * rng.uniform(0.15, 0.25)
        side = f.side * w * 0.55
        p, q = offset(c, (u, -half), (n, side)), offset(c, (u, half), (n, side))
        plate_w = max(0.45 * w, cv.length(MIN_PIECE))
        capsule(cv.d_metal, p, q, plate_w, metal)
        cv.mark([p, q], plate_w / 2)
        for s in np.linspace(0.08, 0.92, int(rng.integers(3, 7))):
            head = lerp(p, q, s)
            screw = [offset(head, (n, f.side * w * 0.3)), offset(head, (n, -f.side * w * 1.4))]
            cv.d_metal.line(screw, fill=metal - 8, width=screw_w)
            cv.mark(screw, screw_w / 2)
    elif f.hardware == "nail":
        p, q = lerp(a, b, rng.uniform(0.05, 0.2)), lerp(a, b, rng.uniform(0.8, 0.95))
        nail_w = max(0.4 * w, cv.length(MIN_PIECE * 0.9))
        capsule(cv.d_metal, p, q, nail_w, metal)
        cv.mark([p, q], nail_w / 2)
        for end in (lerp(p, q, 0.06), lerp(p, q, 0.94)):
            bolt = [offset(end, (n, w * 0.75)), offset(end, (n, -w * 0.75))]
            cv.d_metal.line(bolt, fill=metal, width=screw_w)
            cv.mark(bolt, screw_w / 2)
    else:  # crossed K-wires through the site
        for k in range(int(rng.integers(2, 4))):
            d = _rotate(u, math.radians((1 if k % 2 else -1) * rng.uniform(20, 40)))
            reach = w * rng.uniform(1.4, 2.2)
            start = offset(c, (u, rng.uniform(-0.4, 0.4) * w))
            wire, wire_w = (
                [offset(start, (d, -reach)), offset(start, (d, reach))],
                max(1, round(max(0.12 * w, cv.length(0.014)))),
            )
            cv.d_metal.line(wire, fill=metal, width=wire_w)
            cv.mark(wire, wire_w / 2)


def _swelling(cv: Canvas, bone: Bone, f: Finding, ex: Exposure) -> None:
    """A soft-tissue bulge wider than the normal sleeve (1.3 bone widths each side), denser tissue."""
    a, b = cv.px(bone.p0), cv.px(bone.p1)
    u, n = axis(a, b)
    w, c = cv.length(bone.width), lerp(a, b, f.t)
    half_width = max(2.0 * w, 1.3 * w + cv.length(MIN_SWELLING))
    cv.d_tissue.polygon(spindle(c, u, n, 1.4 * half_width, half_width), fill=int(ex.tissue * 1.5))


def draw_finding(cv: Canvas, bone: Bone, f: Finding, ex: Exposure, rng: np.random.Generator) -> None:
    """Paint the affected bone of an abnormal view (instead of the normal bone)."""
    if f.swelling:
        _swelling(cv, bone, f, ex)
    if f.kind in ("break", "comminuted"):
        site, gap = _break(cv, bone, f, ex, rng)
        if f.kind == "comminuted":
            _fragments(cv, bone, site, gap, ex, rng)
    elif f.kind == "callus":
        _callus(cv, bone, f, ex, rng)
    else:
        _hardware(cv, bone, f, ex, rng)
