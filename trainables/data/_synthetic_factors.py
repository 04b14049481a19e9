"""The factorised built-in set (``data=synthetic-factors``): cartoon faces, 18 classes = 3 masks x 2 x 3.

A toy copy of the reference's mask competition, small enough for tests (a few hundred 96 px
photos, generated in about a second):

* Each class is ``<mask>_<gender>_<age>``, target ``mask * 6 + gender * 3 + age``:
  ``mask`` in (wear, incorrect, nomask), ``gender`` in (male, female), ``age`` in
  (young, middle, old) for ages <30, 30-59 and >=60, as the reference cut them.
* The factors are drawn independently: the mask is a band over nose and mouth (``wear``), a band
  lowered onto the chin with the mouth showing (``incorrect``), or absent; gender is the hair
  style (short crop or long hair to the shoulders); age is the hair colour, a continuous ramp from
  dark brown at 18 through grey to white at 80, so finer age bins are learnable too.
* A person has seven photos, as in the reference: five wearing the mask, one wearing it wrong,
  one without. The person's look (skin, face shape, eyes, hair tint) is fixed; each photo moves,
  scales and turns the face, changes the background, the light and the mask's colour.
* ``train.csv`` holds ``class_name,image_path,target``, the person as ``group`` (set
  ``group_column`` to read it from another name) and the person's ``age`` in years and
  ``gender``; image paths are ``<person folder>/<photo>.jpg``, the folder named
  ``<id>_<gender>_<age>`` like the reference's. Test persons are other people; ``test_labels.csv``
  holds the test answers. ``synthetic_factors.json`` records the factors and the fine age bins.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pandas as pd

from common.io import file_lock, runs_dir

from ._io import default_workers

log = logging.getLogger(__name__)

FACTORS_VERSION = 1  # bump on any change to what is drawn: the folder name and so every cache key change
FACTORS_NAME = f"synthetic-factors-v{FACTORS_VERSION}"
MASKS = ("wear", "incorrect", "nomask")
GENDERS = ("male", "female")
AGE_GROUPS = ("young", "middle", "old")
AGE_EDGES = (30, 60)  # the reference's age groups: <30, 30-59, >=60
AGE_RANGE = (18, 80)
# The reference trained age on 11 finer bins and merged them into the three groups; these cuts
# do the same on this set's ages (every cut at 30 and 60 is among them, so bins nest in groups).
FINE_AGE_CUTS = (20, 25, 30, 35, 40, 45, 50, 55, 60, 65)
PHOTOS = ("mask1", "mask2", "mask3", "mask4", "mask5", "incorrect_mask", "normal")
PHOTO_MASK = (0, 0, 0, 0, 0, 1, 2)  # index into MASKS for each photo

_SKIN = [(240, 205, 180), (225, 180, 150), (200, 150, 115), (160, 110, 80), (120, 80, 55)]
# Mask fabrics: none close to a skin tone, so the mask reads at 32 px.
_MASK_INKS = [(150, 200, 235), (240, 240, 245), (45, 45, 55), (60, 170, 160), (50, 70, 140)]
_HAIR_YOUNG, _HAIR_MID, _HAIR_OLD = (
    np.array([55, 35, 20]),
    np.array([125, 115, 105]),
    np.array([238, 238, 236]),
)


def class_names() -> list[str]:
    """The 18 class names in target order (``mask * 6 + gender * 3 + age``)."""
    return [f"{m}_{g}_{a}" for m in MASKS for g in GENDERS for a in AGE_GROUPS]


def age_group(age: float) -> int:
    """Index into :data:`AGE_GROUPS` of an age in years."""
    return int(np.searchsorted(AGE_EDGES, age, side="right"))


def synthetic_factors_root() -> Path:
    """Where the default factorised set lives: ``runs_dir()/data/synthetic-factors-v1``."""
    return runs_dir() / "data" / FACTORS_NAME


def ensure_synthetic_factors() -> Path:
    """Generate the default factorised set on first use (about a second) and return its folder.

    Written into a temporary folder and renamed into place under a lock, so processes that race
    here see either no set or a whole one.
    """
    root = synthetic_factors_root()
    if (root / "train.csv").is_file():
        return root
    with file_lock(root.with_name(root.name + ".lock")):
        if not (root / "train.csv").is_file():
            start = time.perf_counter()
            generate_synthetic_factors(root)
            log.info("generated the factorised face set at %s in %.1fs", root, time.perf_counter() - start)
    return root


def generate_synthetic_factors(
    out: str | os.PathLike[str],
    *,
    seed: int = 0,
    persons_per_cell: int = 9,
    test_persons_per_cell: int = 2,
    size: int = 96,
    group_column: str = "group",
) -> Path:
    """Draw a factorised face set into ``out`` (which must not exist) in the competition layout.

    The output depends only on the arguments: each photo has its own generator seeded by
    ``(seed, split, person, photo)``.

    Args:
        out: Folder to create.
        seed: Seed of everything random.
        persons_per_cell: Training persons per (gender, age group) pair; each has 7 photos, so
            the training split has ``6 * 7 * persons_per_cell`` rows.
        test_persons_per_cell: The same for the test split (other persons).
        size: Side of the square photos in pixels.
        group_column: Name of the person column in ``train.csv`` (``group`` is read by the folds
            without configuration; another name needs ``group_column`` in the trial config).

    Returns:
        ``out``.
    """
    out = Path(out)
    if out.exists():
        raise FileExistsError(f"{out} exists; generate_synthetic_factors writes a new folder")
    if persons_per_cell < 1 or test_persons_per_cell < 0 or size < 32:
        raise ValueError(
            f"persons_per_cell={persons_per_cell} must be >= 1, test_persons_per_cell="
            f"{test_persons_per_cell} >= 0 and size={size} >= 32"
        )
    if group_column in ("class_name", "image_path", "target", "age", "gender", "path"):
        raise ValueError(f"group_column={group_column!r} clashes with another train.csv column")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        train = _write_split(tmp, "train", _persons(seed, 0, persons_per_cell), seed, size)
        test = _write_split(tmp, "test", _persons(seed, 1, test_persons_per_cell), seed, size)
        train = train.rename(columns={"group": group_column})
        train.to_csv(tmp / "train.csv", index=False)
        if len(test):
            test = test.sample(frac=1.0, random_state=seed).reset_index(drop=True)  # test order tells nothing
            test[["image_path"]].to_csv(tmp / "test.csv", index=False)
            test[["image_path", "target"]].to_csv(tmp / "test_labels.csv", index=False)
        meta = _set_meta(seed, group_column)
        (tmp / "synthetic_factors.json").write_text(json.dumps(meta, indent=2) + "\n")
        os.rename(tmp, out)  # atomic: the set appears whole or not at all
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def _set_meta(seed: int, group_column: str) -> dict[str, Any]:
    """What ``synthetic_factors.json`` records: the version, seed, classes and factor levels."""
    return {
        "version": FACTORS_VERSION,
        "seed": seed,
        "classes": class_names(),
        "factors": {"mask": list(MASKS), "gender": list(GENDERS), "age": list(AGE_GROUPS)},
        "age_edges": list(AGE_EDGES),
        "fine_age_cuts": list(FINE_AGE_CUTS),
        "group_column": group_column,
        "photos": list(PHOTOS),
    }


def _persons(seed: int, split: int, per_cell: int) -> list[dict[str, Any]]:
    """Every person of a split: balanced over (gender, age group), ages uniform inside the group."""
    rng = np.random.default_rng([seed, 7, split])
    lows = (AGE_RANGE[0], *AGE_EDGES)
    highs = (*AGE_EDGES, AGE_RANGE[1] + 1)
    persons = []
    for g in range(len(GENDERS)):
        for a in range(len(AGE_GROUPS)):
            for _ in range(per_cell):
                persons.append({"gender": g, "age": int(rng.integers(lows[a], highs[a]))})
    order = rng.permutation(len(persons))
    return [{**persons[i], "id": n + (0 if split == 0 else 5000)} for n, i in enumerate(order)]


def _write_split(root: Path, split: str, persons: list[dict[str, Any]], seed: int, size: int) -> pd.DataFrame:
    # Threads draw the persons in any order (OpenCV releases the GIL); rows come back in person order.
    with ThreadPoolExecutor(default_workers()) as pool:
        per_person = list(pool.map(lambda person: _write_person(root, split, person, seed, size), persons))
    return pd.DataFrame([row for rows in per_person for row in rows])


def _write_person(
    root: Path, split: str, person: dict[str, Any], seed: int, size: int
) -> list[dict[str, Any]]:
    rows = []
    folder = f"{person['id']:06d}_{GENDERS[person['gender']]}_{person['age']}"
    look = _look(np.random.default_rng([seed, 11, person["id"]]), person)
    for k, (photo, mask) in enumerate(zip(PHOTOS, PHOTO_MASK, strict=True)):
        rng = np.random.default_rng([seed, 13, person["id"], k])
        image = _draw_face(rng, look, mask, size)
        rel = f"{folder}/{photo}.jpg"
        path = root / split / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        ok, data = cv2.imencode(
            ".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 92]
        )
        if not ok:
            raise OSError(f"could not encode {path}")
        path.write_bytes(data.tobytes())
        a = age_group(person["age"])
        target = mask * 6 + person["gender"] * 3 + a
        rows.append(
            {
                "class_name": f"{MASKS[mask]}_{GENDERS[person['gender']]}_{AGE_GROUPS[a]}",
                "image_path": rel,
                "target": target,
                "group": f"p{person['id']:05d}",
                "age": person["age"],
                "gender": GENDERS[person["gender"]],
            }
        )
    return rows


def hair_colour(age: float) -> np.ndarray:
    """RGB hair colour of an age: dark brown at 18, grey at 49, white at 80 (piecewise linear)."""
    t = float(np.clip((age - AGE_RANGE[0]) / (AGE_RANGE[1] - AGE_RANGE[0]), 0.0, 1.0))
    if t < 0.5:
        return _HAIR_YOUNG + (_HAIR_MID - _HAIR_YOUNG) * (t / 0.5)
    return _HAIR_MID + (_HAIR_OLD - _HAIR_MID) * ((t - 0.5) / 0.5)


def _look(rng: np.random.Generator, person: dict[str, Any]) -> dict[str, Any]:
    """What stays the same across a person's photos."""
    hair = hair_colour(person["age"]) + rng.integers(-10, 11, size=3)
    return {
        "skin": np.array(_SKIN[int(rng.integers(0, len(_SKIN)))]) + rng.integers(-8, 9, size=3),
        "hair": np.clip(hair, 0, 255),
        "face_w": rng.uniform(0.24, 0.30),
        "face_h": rng.uniform(0.30, 0.36),
        "eye_gap": rng.uniform(0.35, 0.45),
        "long_hair": person["gender"] == 1,
        "fringe": rng.uniform(0.15, 0.35),
        "old": person["age"] >= AGE_EDGES[1],
    }


def _draw_face(rng: np.random.Generator, look: dict[str, Any], mask: int, size: int) -> np.ndarray:
    """One photo: the person's face with a pose, light, background and mask of this photo."""
    s = 2 * size  # drawn at twice the size, then shrunk: smooth edges without anti-aliasing each shape
    bg = rng.integers(170, 250, size=3).astype(np.float32)
    ramp = np.linspace(-1, 1, s, dtype=np.float32)[:, None, None] * np.float32(rng.uniform(-18, 18))
    canvas = np.clip(np.broadcast_to(bg + ramp, (s, s, 3)), 0, 255).astype(
        np.uint8
    )  # light falls off downwards
    cx, cy = s * (0.5 + rng.uniform(-0.1, 0.1)), s * (0.52 + rng.uniform(-0.07, 0.07))
    scale = rng.uniform(0.82, 1.08)
    fw, fh = look["face_w"] * s * scale, look["face_h"] * s * scale
    hair = tuple(int(v) for v in look["hair"])
    skin = tuple(int(v) for v in np.clip(look["skin"] * rng.uniform(0.92, 1.06), 0, 255))

    def pt(x: float, y: float) -> tuple[int, int]:
        return round(cx + x * fw), round(cy + y * fh)

    def ax(w: float, h: float) -> tuple[int, int]:
        return round(w * fw), round(h * fh)

    if look["long_hair"]:  # hair behind the face, down to the shoulders
        cv2.ellipse(canvas, pt(0, 0.15), ax(1.35, 1.45), 0, 0, 360, hair, -1)
    cv2.ellipse(canvas, pt(0, 0), ax(1.0, 1.0), 0, 0, 360, skin, -1)  # face
    # the crown of the head: a cap of hair over the forehead
    cv2.ellipse(canvas, pt(0, -0.35), ax(1.05, 0.75), 0, 180, 360, hair, -1)
    cv2.rectangle(canvas, pt(-1.02, -0.36), pt(1.02, -0.35 + look["fringe"] * 0.5), hair, -1)
    if look["old"]:  # forehead lines
        for dy in (-0.05, 0.03):
            cv2.line(canvas, pt(-0.35, dy), pt(0.35, dy), (110, 80, 70), max(1, s // 160))
    eye_y, gap = 0.12, look["eye_gap"]
    for side in (-1, 1):
        cv2.circle(canvas, pt(side * gap, eye_y), max(2, round(0.09 * fw)), (250, 250, 250), -1)
        cv2.circle(canvas, pt(side * gap, eye_y), max(1, round(0.045 * fw)), (30, 30, 35), -1)
    cv2.line(canvas, pt(0, 0.2), pt(0.05, 0.42), (120, 80, 60), max(1, s // 120))  # nose
    mouth = (pt(-0.3, 0.65), pt(0.3, 0.72))
    base = np.array(_MASK_INKS[int(rng.integers(0, len(_MASK_INKS)))])
    ink = tuple(int(v) for v in np.clip(base + rng.integers(-12, 13, size=3), 0, 255))
    if mask == 0:  # worn: nose and mouth covered
        cv2.rectangle(canvas, pt(-1.0, 0.28), pt(1.0, 1.0), ink, -1)
        for side in (-1, 1):  # ear loops
            cv2.line(canvas, pt(side * 0.95, 0.4), pt(side * 1.05, 0.05), ink, max(1, s // 100))
    else:
        cv2.rectangle(canvas, *mouth, (150, 40, 50), -1)
        if mask == 1:  # worn wrong: lowered onto the chin, mouth showing
            cv2.rectangle(canvas, pt(-0.8, 0.8), pt(0.8, 1.12), ink, -1)
            for side in (-1, 1):
                cv2.line(canvas, pt(side * 0.8, 0.85), pt(side * 1.02, 0.1), ink, max(1, s // 100))
    angle = rng.uniform(-12, 12)
    turn = cv2.getRotationMatrix2D((cx, cy), angle, 1.0)
    canvas = cv2.warpAffine(canvas, turn, (s, s), borderMode=cv2.BORDER_REFLECT)
    image = cv2.resize(canvas, (size, size), interpolation=cv2.INTER_AREA).astype(np.float32)
    noise = rng.normal(0, 4.0, size=image.shape).astype(np.float32)
    image = image * np.float32(rng.uniform(0.85, 1.1)) + noise  # exposure and sensor noise
    return np.clip(image, 0, 255).astype(np.uint8)


def synthetic_factors_meta(root: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """The description of a generated factorised set (``synthetic_factors.json``).

    Args:
        root: The set's folder; default: the built-in one (generated if needed).
    """
    folder = Path(root) if root is not None else ensure_synthetic_factors()
    return json.loads((folder / "synthetic_factors.json").read_text())
