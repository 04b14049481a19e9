"""Stroke recipes for made things of the built-in sketch set: a house, a car, a cup, a bicycle...

Each recipe takes a random generator and returns strokes (see :mod:`._strokes`); see :mod:`._shapes`
for how they are named.
"""

from __future__ import annotations

import numpy as np

from ._strokes import TAU, Recipe, Strokes, arc, line, loop, rect


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


MADE: dict[str, Recipe] = {
    "bicycle": _bicycle,
    "car": _car,
    "clock": _clock,
    "cup": _cup,
    "envelope": _envelope,
    "eyeglasses": _eyeglasses,
    "house": _house,
    "key": _key,
    "ladder": _ladder,
    "lightbulb": _lightbulb,
    "sailboat": _sailboat,
    "table": _table,
    "umbrella": _umbrella,
}
