"""Decoding photos into normalised RGB arrays.

Every photo goes through :func:`open_normalised`: EXIF orientation applied, any
mode (grayscale, palette, 16-bit, RGBA, CMYK) converted to RGB, and a pixel limit
enforced before the full decode. JPEGs are decoded in draft mode, which lets
libjpeg scale by 1/2, 1/4 or 1/8 while decoding: far faster than a full decode
followed by a resize. Draft decoding still reads the whole entropy-coded stream,
so a truncated or corrupt JPEG fails here just as it would in a full decode.

Only JPEG (including multi-picture MPO files from some cameras) and PNG are
opened: other formats Pillow knows (EPS, TIFF, ...) are rejected rather than
handed to their decoders.
"""
from __future__ import annotations

import contextlib
import hashlib
import io
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, JpegImagePlugin

ACCEPTED_FORMATS: tuple[str, ...] = ("JPEG", "PNG")

# EXIF Orientation tag value -> the transpose that makes the photo upright.
_ORIENTATION_FIX = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
_EXIF_ORIENTATION = 0x0112
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_JPEG_SOI = b"\xff\xd8"


class ImageRejected(ValueError):
    """The file cannot be used as a photo; the message is the reason shown to the user.

    ``category`` is a short stable key used to count rejections
    (see ``weldnet.photos.ingest.REASONS``).
    """

    def __init__(self, message: str, category: str = "unreadable_image") -> None:
        super().__init__(message)
        self.category = category


@dataclass(frozen=True)
class PhotoInfo:
    """What ingest records of a readable photo: upright size and content hash."""

    width: int
    height: int
    sha256: str


@contextlib.contextmanager
def _pixel_limit(max_pixels: int) -> Iterator[None]:
    """Make Pillow's own decompression-bomb guard follow ``max_pixels``, and keep Pillow quiet.

    Pillow warns above MAX_IMAGE_PIXELS and refuses above twice that; our own
    check (a clear ImageRejected at ``max_pixels``) runs right after the header is read.
    Its other warnings ("Corrupt EXIF data", ...) would print once per photo from
    every worker; a photo is either decoded or rejected with a reason instead.
    """
    previous = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = max_pixels
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        Image.MAX_IMAGE_PIXELS = previous


def _orientation(im: Image.Image) -> int:
    """EXIF orientation (1 = upright); a malformed EXIF block counts as upright rather than losing the photo."""
    try:
        value = im.getexif().get(_EXIF_ORIENTATION, 1)
        return value if value in _ORIENTATION_FIX else 1
    except Exception:  # noqa: BLE001 - Pillow raises many types on malformed EXIF
        return 1


def oriented_size(size: tuple[int, int], orientation: int) -> tuple[int, int]:
    """(width, height) of a photo once its EXIF orientation is applied: orientations 5-8 swap the axes."""
    width, height = size
    return (height, width) if orientation in (5, 6, 7, 8) else (width, height)


def _decode(source: str | Path | BinaryIO, max_pixels: int,
            draft_size: tuple[int, int] | None) -> tuple[Image.Image, tuple[int, int]]:
    """Decode to an upright RGB image; also return the full-resolution upright size."""
    try:
        with _pixel_limit(max_pixels), Image.open(source, formats=ACCEPTED_FORMATS) as im:
            width, height = im.size
            if width * height > max_pixels:
                raise ImageRejected(f"image is {width}x{height}, over the {max_pixels:,}-pixel limit "
                                    "(raise ingest.max_pixels to accept it)", "too_large")
            orientation = _orientation(im)
            if draft_size is not None and isinstance(im, JpegImagePlugin.JpegImageFile):
                im.draft("RGB", draft_size)
            im.load()
            if orientation in _ORIENTATION_FIX:
                im = im.transpose(_ORIENTATION_FIX[orientation])
            return to_rgb(im), oriented_size((width, height), orientation)
    except ImageRejected:
        raise
    except Image.DecompressionBombError:
        raise ImageRejected(f"image is over the {max_pixels:,}-pixel limit (raise ingest.max_pixels to accept it)",
                            "too_large") from None
    except (FileNotFoundError, IsADirectoryError, PermissionError) as exc:
        raise ImageRejected(f"cannot read the file ({exc.strerror})") from None
    except Image.UnidentifiedImageError:
        raise ImageRejected(_unidentified_reason(source)) from None
    except Exception as exc:  # noqa: BLE001 - corrupt files make Pillow raise many exception types
        detail = str(exc) or type(exc).__name__
        raise ImageRejected(f"corrupt or truncated image data ({detail})") from None


def _unidentified_reason(source: str | Path | BinaryIO) -> str:
    try:
        if isinstance(source, (str, Path)):
            with open(source, "rb") as fh:
                head = fh.read(8)
        else:
            source.seek(0)
            head = source.read(8)
    except OSError:
        head = b""
    if head.startswith(_JPEG_SOI):
        return "corrupt JPEG: its header cannot be read"
    if head.startswith(_PNG_SIGNATURE):
        return "corrupt PNG: its header cannot be read"
    return "not a JPEG or PNG image"


def open_normalised(path: str | Path | BinaryIO, max_pixels: int,
                    draft_size: tuple[int, int] | None = None) -> Image.Image:
    """Open a photo as an upright RGB image, decoding JPEGs at the smallest scale still >= draft_size."""
    return _decode(path, max_pixels, draft_size)[0]


def to_rgb(im: Image.Image) -> Image.Image:
    """Convert any PIL mode to 8-bit RGB; transparency is composited on white.

    16-bit samples (0..65535) keep their top 8 bits (value // 257), the usual
    fixed mapping, so a dark 16-bit photo stays dark.
    """
    if im.mode == "RGB" and "transparency" not in im.info:
        return im
    if im.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        arr = np.asarray(im).astype(np.int64)
        if im.mode != "I" or (arr.size and arr.max() > 255):
            arr = arr // 257
        im = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), mode="L")
    if im.mode == "F":
        im = Image.fromarray(np.clip(np.asarray(im), 0, 255).astype(np.uint8), mode="L")
    if "transparency" in im.info or im.mode in ("RGBA", "LA", "La", "PA", "RGBa"):
        im = im.convert("RGBA")
        background = Image.new("RGBA", im.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, im).convert("RGB")
    return im.convert("RGB")


def load_resized(path: str | Path | BinaryIO, size: int, max_pixels: int) -> np.ndarray:
    """A photo as a uint8 array of shape (size, size, 3), squashed to a square like AlexNet's inputs.

    Squashing (no crop, no padding) keeps every part of the scene, at the cost of
    changing the aspect ratio; both rigs shoot 4:3 so all photos are squashed alike.
    """
    im = open_normalised(path, max_pixels, draft_size=(size, size))
    im = im.resize((size, size), Image.Resampling.BILINEAR, reducing_gap=2.0)
    return np.asarray(im, dtype=np.uint8)


def inspect_photo(data: bytes, max_pixels: int) -> PhotoInfo:
    """Check that ``data`` decodes as a photo and return its upright size and SHA-256.

    Every byte is decoded (JPEGs at 1/8 scale, which still reads the whole
    stream), so truncation is caught, not just a bad header.
    """
    if not data:
        raise ImageRejected("empty file (0 bytes)")
    _, (width, height) = _decode(io.BytesIO(data), max_pixels, draft_size=(1, 1))
    if data.startswith(_PNG_SIGNATURE):
        # A PNG's chunk CRCs catch damage that still inflates (e.g. in stored blocks).
        try:
            with _pixel_limit(max_pixels), Image.open(io.BytesIO(data), formats=("PNG",)) as png:
                png.verify()
        except Exception as exc:  # noqa: BLE001 - see _decode
            raise ImageRejected(f"corrupt PNG ({str(exc) or type(exc).__name__})") from None
    return PhotoInfo(width, height, hashlib.sha256(data).hexdigest())

