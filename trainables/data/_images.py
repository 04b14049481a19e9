"""Reading one image file into RGB pixels, and fitting it into the square cache size."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageOps

# Decompression-bomb guard stays on, but real scans can be large: allow up to ~180 MP.
Image.MAX_IMAGE_PIXELS = 180_000_000

IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"})
WHITE = 255  # sketch background: transparent pixels and padding become white


def read_rgb(path: str | Path, *, min_side: int | None = None) -> np.ndarray:
    """Decode an image file into an ``(H, W, 3)`` uint8 RGB array, upright and on white.

    Handles every mode PIL opens: ``L``/``1``/``P``/``CMYK``/``YCbCr`` are converted; alpha
    (``RGBA``, ``LA``, ``PA``, ``P`` with a transparent index) is composited onto white, the
    background of a sketch, rather than dropped (dropping it turns transparent pixels black);
    16-bit and 32-bit integer images (``I;16``, ``I``) and float images (``F``) are scaled to
    0..255; EXIF orientation is applied.

    Args:
        path: The image file.
        min_side: When given, JPEG files may be decoded at a reduced scale (DCT scaling) as long as
            both sides stay at least this large; a large speed-up for small cache sizes.

    Returns:
        The pixels, C-contiguous.
    """
    with Image.open(path) as im:
        if min_side and im.format == "JPEG":
            im.draft("RGB" if im.mode == "RGB" else None, (min_side, min_side))
        im = ImageOps.exif_transpose(im)
        return to_rgb(im)


def to_rgb(im: Image.Image) -> np.ndarray:
    """Convert an opened PIL image of any mode to ``(H, W, 3)`` uint8 RGB on white (see :func:`read_rgb`)."""
    if im.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        gray = _to_uint8(np.asarray(im))
        return np.ascontiguousarray(np.repeat(gray[:, :, None], 3, axis=2))
    if (im.mode == "P" and "transparency" in im.info) or im.mode == "PA":
        im = im.convert("RGBA")
    if im.mode in ("RGBA", "LA", "La", "RGBa"):
        im = im.convert("RGBA")
        background = Image.new("RGBA", im.size, (WHITE, WHITE, WHITE, 255))
        im = Image.alpha_composite(background, im)
    if im.mode != "RGB":
        im = im.convert("RGB")
    return np.ascontiguousarray(np.asarray(im, dtype=np.uint8))


def _to_uint8(arr: np.ndarray) -> np.ndarray:
    """Map a single-channel integer or float image onto 0..255 by its nominal range."""
    if arr.dtype == np.uint8:
        return arr
    if np.issubdtype(arr.dtype, np.floating):
        hi = 1.0 if float(np.nanmax(arr, initial=0.0)) <= 1.0 else 255.0
        return np.clip(np.nan_to_num(arr) * (255.0 / hi), 0, 255).round().astype(np.uint8)
    top = int(arr.max(initial=0))
    if top <= 255 and arr.dtype.itemsize > 2:  # 8-bit data stored in a 32-bit "I" image
        return np.clip(arr, 0, 255).astype(np.uint8)
    if top <= 65535:
        # 16-bit: 0..65535 -> 0..255 (divide by 257 so that 65535 maps exactly to 255).
        return ((np.clip(arr, 0, 65535).astype(np.uint32) + 128) // 257).astype(np.uint8)
    lo = int(arr.min())
    return ((arr.astype(np.float64) - lo) * (255.0 / max(top - lo, 1))).round().astype(np.uint8)


def fit_square(rgb: np.ndarray, size: int) -> np.ndarray:
    """Resize keeping the aspect ratio so the long side is ``size``, then pad to a square with white.

    Padding is centred. Downscaling uses ``cv2.INTER_AREA`` (no aliasing of thin strokes),
    upscaling ``cv2.INTER_LINEAR``; an image already ``size`` on its long side is only padded.

    Args:
        rgb: ``(H, W, 3)`` uint8.
        size: Side of the output square.

    Returns:
        ``(size, size, 3)`` uint8.
    """
    h, w = rgb.shape[:2]
    scale = size / max(h, w)
    nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
    if (nh, nw) != (h, w):
        interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
        rgb = cv2.resize(rgb, (nw, nh), interpolation=interp)
    if nh == nw == size:
        return np.ascontiguousarray(rgb)
    out = np.full((size, size, 3), WHITE, dtype=np.uint8)
    top, left = (size - nh) // 2, (size - nw) // 2
    out[top : top + nh, left : left + nw] = rgb
    return out


def load_square(path: str | Path, size: int) -> np.ndarray:
    """Decode ``path`` and fit it into a white ``size`` x ``size`` square (what the cache stores)."""
    return fit_square(read_rgb(path, min_side=size), size)


def check_image(path: str | Path) -> tuple[str | None, str]:
    """Check that a file exists and decodes; return ``(problem or None, content digest)``.

    PNG files are verified chunk by chunk (CRCs, truncation) without decompressing; every other
    format is really decoded (JPEG at a reduced DCT scale, which still reads every byte).

    Args:
        path: The image file.

    Returns:
        ``(None, digest)`` for a good file; ``(reason, "")`` for a bad one, the reason readable by a person.
    """
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        return "file not found", ""
    except IsADirectoryError:
        return "is a directory, not an image file", ""
    except OSError as exc:
        return f"cannot read: {exc.strerror or exc}", ""
    if not data:
        return "empty file (0 bytes)", ""
    try:
        with Image.open(io.BytesIO(data)) as im:
            if im.format == "PNG":
                im.verify()
            else:
                if im.format == "JPEG":
                    im.draft(None, (64, 64))
                im.load()
    except Image.UnidentifiedImageError:
        return f"not an image PIL can read ({len(data)} bytes; starts with {data[:8]!r})", ""
    except Image.DecompressionBombError as exc:
        return f"too large to decode safely: {exc}", ""
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        return f"corrupt or truncated image: {exc}", ""
    return None, hashlib.blake2b(data, digest_size=10).hexdigest()
