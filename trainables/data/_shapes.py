"""Stroke recipes for the built-in sketch set: 24 everyday objects, each with its own variations.

A recipe takes a random generator and returns strokes: ``(n, 2)`` float arrays of points in a
unit box (about -1..1, y pointing down) that a pen would follow. Proportions, part counts and
optional parts vary per call, so two drawings of one class differ the way two people's do; the
renderer in ``_synthetic`` adds the hand: wobble, slant, broken lines, thickness.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

Strokes = list[np.ndarray]
Recipe = Callable[[np.random.Generator], Strokes]
TAU = 2 * np.pi


def line(*points: tuple[float, float], n: int = 10) -> np.ndarray:
    """A polyline through ``points``, each segment sampled with ``n`` points."""
    pts = np.asarray(points, dtype=np.float64)
    segs = [np.linspace(a, b, n, endpoint=False) for a, b in zip(pts[:-1], pts[1:], strict=True)]
    return np.vstack([*segs, pts[-1:]])


def arc(cx: float, cy: float, rx: float, ry: float, a0: float, a1: float, n: int = 40) -> np.ndarray:
    """An elliptical arc from angle ``a0`` to ``a1`` (radians; 0 is +x, angles turn towards +y)."""
    t = np.linspace(a0, a1, n)
    return np.stack([cx + rx * np.cos(t), cy + ry * np.sin(t)], axis=1)


def loop(rng: np.random.Generator, cx: float, cy: float, rx: float, ry: float | None = None) -> np.ndarray:
    """A hand-drawn closed ellipse: random start, ending a little short of or past the start."""
    a0 = rng.uniform(0, TAU)
    return arc(cx, cy, rx, rx if ry is None else ry, a0, a0 + TAU * rng.uniform(0.96, 1.06), 48)


def rect(x0: float, y0: float, x1: float, y1: float) -> np.ndarray:
    return line((x0, y0), (x1, y0), (x1, y1), (x0, y1), (x0, y0))


def _house(rng: np.random.Generator) -> Strokes:
    w, h = rng.uniform(0.55, 0.75), rng.uniform(0.45, 0.65)
    top, bottom = 0.85 - 2 * h, 0.85
    apex = (rng.uniform(-0.12, 0.12), top - rng.uniform(0.45, 0.75))
    eave = rng.uniform(0.0, 0.15)
    s: Strokes = [rect(-w, top, w, bottom), line((-w - eave, top), apex, (w + eave, top))]
    dx = rng.uniform(-0.3, 0.3) * w
    dw, dh = rng.uniform(0.12, 0.2), rng.uniform(0.35, 0.55) * 2 * h
    s.append(line((dx - dw, bottom), (dx - dw, bottom - dh), (dx + dw, bottom - dh), (dx + dw, bottom)))
    for side in (-1, 1):
        if rng.random() < 0.8:
            cx, cy, r = side * w * 0.62, top + 0.35 * h, rng.uniform(0.1, 0.16)
            s += [
                rect(cx - r, cy - r, cx + r, cy + r),
                line((cx - r, cy), (cx + r, cy)),
                line((cx, cy - r), (cx, cy + r)),
            ]
    if rng.random() < 0.5:
        x = rng.uniform(0.2, 0.45) * w * np.sign(rng.uniform(-1, 1))
        s.append(line((x, top - 0.15), (x, top - 0.45), (x + 0.15, top - 0.45), (x + 0.15, top - 0.25)))
    return s


def _tree(rng: np.random.Generator) -> Strokes:
    tw, base = rng.uniform(0.08, 0.16), rng.uniform(0.1, 0.3)
    r, n = rng.uniform(0.5, 0.7), int(rng.integers(6, 11))
    cy = base - r * 0.9
    t = np.linspace(0, TAU, 160)
    bump = 1 + rng.uniform(0.1, 0.2) * np.abs(np.sin(n * t / 2))
    crown = np.stack([r * bump * np.cos(t), cy + r * 0.85 * bump * np.sin(t)], axis=1)
    s: Strokes = [crown, line((-tw, 0.95), (-tw, base)), line((tw, 0.95), (tw, base))]
    if rng.random() < 0.6:
        s.append(line((0, base + 0.05), (rng.uniform(-0.3, 0.3), base - 0.3)))
    if rng.random() < 0.5:
        s.append(line((-0.6, 0.95), (0.6, 0.95)))
    return s


def _car(rng: np.random.Generator) -> Strokes:
    L, hb, hr = rng.uniform(0.85, 1.0), rng.uniform(0.25, 0.35), rng.uniform(0.25, 0.4)
    y0 = 0.3
    f0, f1 = rng.uniform(-0.55, -0.35), rng.uniform(0.3, 0.55)
    body = line(
        (-L, y0),
        (-L, y0 - hb),
        (f0 - 0.15, y0 - hb),
        (f0 + 0.05, y0 - hb - hr),
        (f1 - 0.05, y0 - hb - hr),
        (f1 + 0.15, y0 - hb),
        (L, y0 - hb + 0.05),
        (L, y0),
        (-L, y0),
    )
    wr = rng.uniform(0.15, 0.22)
    mid = (f0 + f1) / 2
    return [
        body,
        loop(rng, -L * 0.58, y0 + 0.02, wr),
        loop(rng, L * 0.58, y0 + 0.02, wr),
        line((f0 + 0.05, y0 - hb), (f1 - 0.02, y0 - hb)),
        line((mid, y0 - hb - hr + 0.03), (mid, y0 - hb)),
    ]


def _fish(rng: np.random.Generator) -> Strokes:
    L, h = rng.uniform(0.55, 0.7), rng.uniform(0.3, 0.45)
    nose, joint = -0.85, -0.85 + 2 * L
    t = np.linspace(0, 1, 30)
    upper = np.stack([nose + (joint - nose) * t, -h * np.sin(np.pi * t)], axis=1)
    lower = np.stack([nose + (joint - nose) * t, h * np.sin(np.pi * t)], axis=1)
    tl = rng.uniform(0.25, 0.4)
    tail = line(
        (joint - 0.05, 0),
        (joint + tl, -tl * 1.1),
        (joint + tl * 0.8, 0),
        (joint + tl, tl * 1.1),
        (joint - 0.05, 0),
    )
    s: Strokes = [upper, lower, tail, loop(rng, nose + 0.25, -h * 0.25, 0.05)]
    if rng.random() < 0.7:
        s.append(arc(nose + 0.45, 0, 0.12, h * 0.7, -1.2, 1.2, 16))
    if rng.random() < 0.5:
        s.append(line((nose + L * 0.9, -h * 0.95), (nose + L * 1.2, -h * 1.45), (nose + L * 1.4, -h * 0.9)))
    return s


def _cup(rng: np.random.Generator) -> Strokes:
    w, h, taper = rng.uniform(0.4, 0.55), rng.uniform(0.55, 0.75), rng.uniform(0.0, 0.12)
    top, bottom = -h + 0.1, h + 0.1
    rim_h = rng.uniform(0.06, 0.12)
    s: Strokes = [
        loop(rng, 0, top, w, rim_h),
        line((-w, top), (-w + taper, bottom - 0.05)),
        line((w, top), (w - taper, bottom - 0.05)),
        arc(0, bottom - 0.05, w - taper, rim_h, 0, np.pi, 20),
        arc(w - taper / 2, 0.1, rng.uniform(0.22, 0.32), rng.uniform(0.25, 0.38), -np.pi / 2, np.pi / 2, 24),
    ]
    for k in range(int(rng.integers(0, 3))):
        x = -0.2 + 0.25 * k
        s.append(
            np.stack(
                [x + 0.06 * np.sin(np.linspace(0, 3 * np.pi, 20)), np.linspace(top - 0.15, top - 0.6, 20)],
                axis=1,
            )
        )
    return s


def _star(rng: np.random.Generator) -> Strokes:
    n = 5 if rng.random() < 0.85 else 6
    ro, ri, a0 = rng.uniform(0.8, 0.95), rng.uniform(0.35, 0.5), -np.pi / 2 + rng.uniform(-0.15, 0.15)
    a = a0 + np.arange(2 * n + 1) * np.pi / n
    r = np.where(np.arange(2 * n + 1) % 2 == 0, ro, ri)
    return [line(*zip(r * np.cos(a), r * np.sin(a), strict=True), n=6)]


def _sun(rng: np.random.Generator) -> Strokes:
    r, n = rng.uniform(0.32, 0.45), int(rng.integers(8, 15))
    a0 = rng.uniform(0, TAU)
    rays = [
        line((np.cos(a) * (r + 0.1), np.sin(a) * (r + 0.1)), (np.cos(a) * (r + L), np.sin(a) * (r + L)), n=6)
        for a, L in zip(a0 + np.arange(n) * TAU / n, rng.uniform(0.3, 0.5, n), strict=True)
    ]
    s: Strokes = [loop(rng, 0, 0, r), *rays]
    if rng.random() < 0.3:
        s += [
            loop(rng, -r * 0.35, -r * 0.2, 0.04),
            loop(rng, r * 0.35, -r * 0.2, 0.04),
            arc(0, r * 0.1, r * 0.45, r * 0.35, 0.3, np.pi - 0.3, 16),
        ]
    return s


def _flower(rng: np.random.Generator) -> Strokes:
    n, c = int(rng.integers(5, 9)), rng.uniform(0.12, 0.18)
    cy, pl = -0.35, rng.uniform(0.25, 0.35)
    a0 = rng.uniform(0, TAU)
    petals = []
    for a in a0 + np.arange(n) * TAU / n:
        t = np.linspace(-np.pi / 2, np.pi / 2, 20)
        px = (c + pl * np.cos(t)) * np.cos(a) - pl * 0.35 * np.sin(t) * np.sin(a)
        py = cy + (c + pl * np.cos(t)) * np.sin(a) + pl * 0.35 * np.sin(t) * np.cos(a)
        petals.append(np.stack([px, py], axis=1))
    bend = rng.uniform(-0.15, 0.15)
    stem = np.stack([bend * np.sin(np.linspace(0, np.pi, 20)), np.linspace(cy + c + pl, 0.95, 20)], axis=1)
    side = np.sign(rng.uniform(-1, 1))
    leaf_y = rng.uniform(0.35, 0.6)
    leaf = [line((0, leaf_y), (side * 0.2, leaf_y - 0.18), (side * 0.4, leaf_y - 0.1), (0, leaf_y), n=8)]
    return [loop(rng, 0, cy, c), *petals, stem, *leaf]


def _face(rng: np.random.Generator) -> Strokes:
    r = rng.uniform(0.75, 0.9)
    ex, ey = rng.uniform(0.25, 0.38), rng.uniform(-0.35, -0.2)
    er = rng.uniform(0.05, 0.1)
    mood = rng.uniform(0.6, 1.0) if rng.random() < 0.85 else -0.6
    mouth = arc(0, 0.25 - 0.2 * mood * 0.3, 0.4, 0.25 * abs(mood), 0.35, np.pi - 0.35, 20)
    if mood < 0:
        mouth[:, 1] = 0.6 - (mouth[:, 1] - 0.25)
    s: Strokes = [
        loop(rng, 0, 0, r, r * rng.uniform(0.9, 1.1)),
        loop(rng, -ex, ey, er),
        loop(rng, ex, ey, er),
        mouth,
    ]
    if rng.random() < 0.5:
        s.append(line((0, -0.05), (-0.06, 0.1), (0.04, 0.12)))
    return s


def _bicycle(rng: np.random.Generator) -> Strokes:
    wr, span = rng.uniform(0.3, 0.38), rng.uniform(0.5, 0.62)
    hub_y = 0.35
    rear, front = (-span, hub_y), (span, hub_y)
    crank = (rng.uniform(-0.12, 0.05), hub_y)
    seat = (-0.15 + rng.uniform(-0.05, 0.05), hub_y - rng.uniform(0.45, 0.6))
    head = (span - 0.15, seat[1] + 0.02)
    return [
        loop(rng, *rear, wr),
        loop(rng, *front, wr),
        line(rear, crank, seat, rear),
        line(seat, head, crank),
        line(head, front),
        line((head[0] - 0.08, head[1] - 0.15), (head[0] + 0.05, head[1] - 0.15), (head[0], head[1]), n=6),
        line((seat[0] - 0.12, seat[1] - 0.05), (seat[0] + 0.1, seat[1] - 0.05), n=6),
    ]


def _umbrella(rng: np.random.Generator) -> Strokes:
    w, h, n = rng.uniform(0.8, 0.95), rng.uniform(0.45, 0.65), int(rng.integers(3, 6))
    y = -0.1
    s: Strokes = [arc(0, y, w, h, np.pi, TAU, 40)]
    edges = np.linspace(-w, w, n + 1)
    s += [
        arc((a + b) / 2, y, (b - a) / 2, 0.08, np.pi, 0, 12)
        for a, b in zip(edges[:-1], edges[1:], strict=True)
    ]
    hook = rng.uniform(0.1, 0.16)
    s.append(np.vstack([line((0, y - h), (0, 0.75)), arc(-hook, 0.75, hook, hook, 0, np.pi, 14)]))
    return s


def _key(rng: np.random.Generator) -> Strokes:
    r = rng.uniform(0.22, 0.32)
    cx, end, sw = -0.85 + r, rng.uniform(0.75, 0.9), rng.uniform(0.05, 0.08)
    s: Strokes = [loop(rng, cx, 0, r), line((cx + r, -sw), (end, -sw), (end, sw), (cx + r, sw))]
    if rng.random() < 0.6:
        s.append(loop(rng, cx, 0, r * 0.35))
    teeth = int(rng.integers(2, 4))
    x = end - 0.05
    for _ in range(teeth):
        d = rng.uniform(0.12, 0.22)
        s.append(line((x, sw), (x, sw + d), (x - 0.08, sw + d), (x - 0.08, sw), n=4))
        x -= rng.uniform(0.13, 0.2)
    return s


def _ladder(rng: np.random.Generator) -> Strokes:
    wt, wb, n = rng.uniform(0.2, 0.3), rng.uniform(0.3, 0.45), int(rng.integers(4, 8))
    s: Strokes = [line((-wt, -0.95), (-wb, 0.95)), line((wt, -0.95), (wb, 0.95))]
    for y in np.linspace(-0.8, 0.8, n):
        w = wt + (wb - wt) * (y + 0.95) / 1.9
        s.append(line((-w, y), (w, y), n=6))
    return s


def _envelope(rng: np.random.Generator) -> Strokes:
    w, h = rng.uniform(0.8, 0.95), rng.uniform(0.5, 0.62)
    tip = rng.uniform(0.0, 0.25)
    s: Strokes = [rect(-w, -h, w, h), line((-w, -h), (0, tip), (w, -h))]
    if rng.random() < 0.5:
        s += [line((-w, h), (-w * 0.2, 0.05 + tip / 2)), line((w, h), (w * 0.2, 0.05 + tip / 2))]
    if rng.random() < 0.4:
        s.append(rect(w * 0.55, -h * 0.8, w * 0.85, -h * 0.35))
    return s


def _lightbulb(rng: np.random.Generator) -> Strokes:
    r, neck = rng.uniform(0.42, 0.52), rng.uniform(0.16, 0.22)
    cy = -0.3
    a = np.arcsin(min(neck / r, 0.95))
    bulb = arc(0, cy, r, r, np.pi / 2 + a, 2.5 * np.pi - a, 48)
    yb = cy + r * np.cos(a)
    s: Strokes = [bulb, line((-neck, yb), (-neck, yb + 0.35)), line((neck, yb), (neck, yb + 0.35))]
    s += [line((-neck, yb + d), (neck, yb + d), n=5) for d in np.linspace(0.1, 0.35, int(rng.integers(2, 4)))]
    s.append(line((-neck * 0.5, yb + 0.35), (0, yb + 0.47), (neck * 0.5, yb + 0.35), n=5))
    s.append(line((-0.08, yb), (-0.05, cy + 0.05), (0.05, cy + 0.05), (0.08, yb), n=6))
    if rng.random() < 0.4:
        for ang in (-2.4, -1.57, -0.75):
            s.append(
                line(
                    (np.cos(ang) * (r + 0.1), cy + np.sin(ang) * (r + 0.1)),
                    (np.cos(ang) * (r + 0.3), cy + np.sin(ang) * (r + 0.3)),
                    n=5,
                )
            )
    return s


def _heart(rng: np.random.Generator) -> Strokes:
    t = np.linspace(0, TAU * rng.uniform(0.97, 1.03), 80) + rng.uniform(-0.3, 0.3)
    x = 16 * np.sin(t) ** 3
    y = -(13 * np.cos(t) - 5 * np.cos(2 * t) - 2 * np.cos(3 * t) - np.cos(4 * t))
    k = rng.uniform(0.85, 1.15)
    s: Strokes = [np.stack([x / 17 * k, y / 17], axis=1)]
    if rng.random() < 0.3:  # an arrow through it
        s.append(line((-0.95, 0.6), (0.95, -0.6), n=12))
    return s


def _moon(rng: np.random.Generator) -> Strokes:
    r, off = rng.uniform(0.75, 0.9), rng.uniform(0.3, 0.5)
    ri = r * rng.uniform(0.85, 1.0)
    # The points where the inner circle (centre off to the right) meets the outer one.
    cos_a = (off**2 + r**2 - ri**2) / (2 * off * r)
    a = np.arccos(np.clip(cos_a, -1, 1))
    outer = arc(0, 0, r, r, a, TAU - a, 48)
    b = np.arctan2(r * np.sin(a), r * np.cos(a) - off)
    inner = arc(off, 0, ri, ri, TAU - b, b, 40)
    s: Strokes = [outer, inner]
    if rng.random() < 0.4:
        s.append(
            line(
                (0.6, -0.7),
                (0.65, -0.55),
                (0.8, -0.5),
                (0.65, -0.45),
                (0.6, -0.3),
                (0.55, -0.45),
                (0.4, -0.5),
                (0.55, -0.55),
                (0.6, -0.7),
                n=3,
            )
        )
    return s


def _cloud(rng: np.random.Generator) -> Strokes:
    w, n = rng.uniform(0.75, 0.92), int(rng.integers(3, 6))
    base = rng.uniform(0.05, 0.2)
    xs = np.linspace(-w, w, n + 1)
    bumps = [
        arc((a + b) / 2, base, (b - a) / 2 * 1.1, rng.uniform(0.3, 0.55), np.pi, TAU, 18)
        for a, b in zip(xs[:-1], xs[1:], strict=True)
    ]
    s: Strokes = [np.vstack(bumps), line((w, base), (-w, base), n=12)]
    if rng.random() < 0.4:
        s += [
            line((x, base + 0.2), (x - 0.08, base + 0.45), n=4)
            for x in np.linspace(-w * 0.6, w * 0.6, int(rng.integers(3, 6)))
        ]
    return s


def _snail(rng: np.random.Generator) -> Strokes:
    r, turns = rng.uniform(0.45, 0.55), rng.uniform(2.2, 3.0)
    t = np.linspace(0, TAU * turns, 140)
    rr = r * (1 - t / (TAU * turns)) ** 0.9
    a0 = rng.uniform(0, TAU)
    spiral = np.stack([0.1 + rr * np.cos(-t + a0), -0.05 + rr * np.sin(-t + a0)], axis=1)
    foot = 0.05 + r
    body = line(
        (0.1 + r + 0.05, foot - 0.05),
        (-0.85, foot),
        (-0.75, foot - 0.25),
        (-0.55, foot - 0.25),
        (-0.45, foot - 0.05),
        n=10,
    )
    return [
        spiral,
        body,
        line((-0.7, foot - 0.25), (-0.8, foot - 0.55), n=6),
        line((-0.6, foot - 0.25), (-0.55, foot - 0.55), n=6),
    ]


def _sailboat(rng: np.random.Generator) -> Strokes:
    w, d = rng.uniform(0.7, 0.9), rng.uniform(0.2, 0.3)
    deck = 0.45
    mx = rng.uniform(-0.15, 0.1)
    top = rng.uniform(-0.95, -0.8)
    s: Strokes = [
        line((-w, deck), (w, deck), (w * 0.75, deck + d), (-w * 0.75, deck + d), (-w, deck)),
        line((mx, deck), (mx, top)),
        line((mx + 0.03, top + 0.05), (mx + rng.uniform(0.5, 0.7), deck - 0.1), (mx + 0.03, deck - 0.1)),
    ]
    if rng.random() < 0.6:
        s.append(
            line((mx - 0.03, top + 0.15), (mx - rng.uniform(0.35, 0.5), deck - 0.1), (mx - 0.03, deck - 0.1))
        )
    if rng.random() < 0.6:
        x = np.linspace(-0.95, 0.95, 40)
        s.append(np.stack([x, deck + d + 0.12 + 0.04 * np.sin(x * 12)], axis=1))
    return s


def _clock(rng: np.random.Generator) -> Strokes:
    r = rng.uniform(0.75, 0.9)
    ticks = 12 if rng.random() < 0.6 else 4
    s: Strokes = [loop(rng, 0, 0, r)]
    for a in np.arange(ticks) * TAU / ticks:
        s.append(
            line(
                (np.cos(a) * r * 0.82, np.sin(a) * r * 0.82),
                (np.cos(a) * r * 0.95, np.sin(a) * r * 0.95),
                n=3,
            )
        )
    for length, ang in ((0.45, rng.uniform(0, TAU)), (0.7, rng.uniform(0, TAU))):
        s.append(line((0, 0), (np.cos(ang) * r * length, np.sin(ang) * r * length), n=6))
    if rng.random() < 0.35:  # an alarm clock's bells
        s += [arc(-0.55, -0.75, 0.25, 0.18, np.pi, TAU, 12), arc(0.55, -0.75, 0.25, 0.18, np.pi, TAU, 12)]
    return s


def _mushroom(rng: np.random.Generator) -> Strokes:
    w, h = rng.uniform(0.75, 0.95), rng.uniform(0.45, 0.65)
    y = rng.uniform(-0.05, 0.1)
    sw = rng.uniform(0.15, 0.25)
    s: Strokes = [
        arc(0, y, w, h, np.pi, TAU, 40),
        np.vstack(
            [arc(0, y, w, 0.12, 0, np.pi / 2 - 0.3, 8)[::-1], arc(0, y, w, 0.12, np.pi / 2 + 0.3, np.pi, 8)]
        ),
        line((-sw, y + 0.1), (-sw * 1.1, 0.9), (sw * 1.1, 0.9), (sw, y + 0.1)),
    ]
    for _ in range(int(rng.integers(0, 4))):
        s.append(loop(rng, rng.uniform(-0.5, 0.5) * w, y - rng.uniform(0.2, 0.6) * h, rng.uniform(0.06, 0.1)))
    return s


def _table(rng: np.random.Generator) -> Strokes:
    w, depth, leg = rng.uniform(0.8, 0.95), rng.uniform(0.15, 0.3), rng.uniform(0.7, 0.9)
    y = -0.35
    sk = rng.uniform(0.1, 0.25)
    s: Strokes = [line((-w, y), (-w + sk, y - depth), (w + sk * 0.2, y - depth), (w, y), (-w, y))]
    s.append(line((-w, y), (-w, y + 0.08), (w, y + 0.08), (w, y), n=6))
    for x in (-w + 0.08, w - 0.08):
        s.append(line((x, y + 0.08), (x, y + 0.08 + leg), n=8))
    if rng.random() < 0.7:
        for x in (-w + sk + 0.08, w + sk * 0.2 - 0.1):
            s.append(line((x, y + 0.08), (x, y - depth + 0.08 + leg * 0.85), n=8))
    return s


def _eyeglasses(rng: np.random.Generator) -> Strokes:
    r = rng.uniform(0.3, 0.38)
    gap = rng.uniform(0.12, 0.22)
    cx = gap / 2 + r
    ry = r * rng.uniform(0.75, 1.0)
    s: Strokes = [
        loop(rng, -cx, 0, r, ry),
        loop(rng, cx, 0, r, ry),
        arc(0, -0.02, gap / 2 + 0.02, 0.08, np.pi, TAU, 10),
    ]
    drop = rng.uniform(-0.1, 0.25)
    s += [
        line((-cx - r, -0.05), (-0.98, -0.15), (-0.98 - 0.02, drop), n=8),
        line((cx + r, -0.05), (0.98, -0.15), (1.0, drop), n=8),
    ]
    return s


RECIPES: dict[str, Recipe] = {
    "bicycle": _bicycle, "car": _car, "cloud": _cloud, "clock": _clock, "cup": _cup,
    "envelope": _envelope, "eyeglasses": _eyeglasses, "face": _face, "fish": _fish, "flower": _flower,
    "heart": _heart, "house": _house, "key": _key, "ladder": _ladder, "lightbulb": _lightbulb,
    "moon": _moon, "mushroom": _mushroom, "sailboat": _sailboat, "snail": _snail, "star": _star,
    "sun": _sun, "table": _table, "tree": _tree, "umbrella": _umbrella,
}  # fmt: skip
