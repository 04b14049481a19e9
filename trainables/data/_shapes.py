"""Stroke recipes for the built-in sketch set: 24 everyday objects, each with its own variations.

A recipe takes a random generator and returns strokes: ``(n, 2)`` float arrays of points in a
unit box (about -1..1, y pointing down) that a pen would follow. Proportions, part counts and
optional parts vary per call, so two drawings of one class differ the way two people's do; the
renderer in ``_synthetic`` adds the hand: wobble, slant, broken lines, thickness.
"""

from __future__ import annotations

from ._shapes_made import MADE
from ._shapes_nature import NATURE
from ._strokes import Recipe, Strokes

__all__ = ["RECIPES", "Recipe", "Strokes"]

# Class name -> recipe; the built-in set orders its classes by name (sorted), whatever the order here.
RECIPES: dict[str, Recipe] = dict(sorted({**MADE, **NATURE}.items()))
