"""Reading and writing image files as float arrays in [0, 1].

Files are decoded with OpenCV (8- and 16-bit, gray or colour, PNG/JPEG/BMP/TIFF); Pillow reads the header
first so that the size is checked against a pixel limit before any pixel is decoded. Arrays are
``(H, W, C)`` float32 in [0, 1]; colour is RGB order.
"""

from __future__ import annotations

import io
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import ExifTags, Image, ImageOps

from r3l.errors import R3LError, warn
from r3l.io.files import atomic_write_bytes

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
#: Default limit on width × height (a decompression-bomb guard); ``R3L_MAX_PIXELS`` overrides it.
DEFAULT_MAX_PIXELS = 1 << 28

# Pillow's own bomb check would raise before ours with a less specific message.
Image.MAX_IMAGE_PIXELS = None
# OpenCV would print its own decoder messages to stderr next to r3l's one-line error.
if hasattr(cv2, "setLogLevel"):
    cv2.setLogLevel(0)


def max_pixels() -> int:
    value = os.environ.get("R3L_MAX_PIXELS")
    if value is None:
        return DEFAULT_MAX_PIXELS
    try:
        limit = int(value)
    except ValueError:
        raise R3LError(f"R3L_MAX_PIXELS={value!r}: expected a positive whole number") from None
    if limit <= 0:
        raise R3LError(f"R3L_MAX_PIXELS={value!r}: expected a positive whole number")
    return limit


@dataclass(frozen=True)
class ImageInfo:
    """What a file held: its size, colour channel count (1 or 3), bit depth (8, 16, or 32 for float) and
    whether it had an alpha channel."""

    height: int
    width: int
    channels: int
    bits: int
    alpha: bool = False
    icc_profile: bytes | None = None
    """The file's ICC colour profile, which :func:`write_image` writes back."""
    exif: bytes | None = None
    """The file's EXIF block with its orientation reset (the pixels were turned upright on reading)."""


def _open_checked(path: Path) -> str:
    """Check that ``path`` is an image within the pixel limit; return which decoder reads it best.

    ``"opencv"`` for 16-bit colour (Pillow would cut it to 8 bits) and for TIFFs that Pillow cannot identify
    (e.g. float colour), ``"pillow"`` otherwise.
    """
    if not path.is_file():
        raise R3LError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise R3LError(f"{path}: empty file, expected an image")
    try:
        with warnings.catch_warnings(), Image.open(path) as im:
            warnings.simplefilter("ignore")  # e.g. "Corrupt EXIF data": the one-line error below says enough
            width, height = im.size
            rawmode = str(im.tile[0][3][0] if im.tile and isinstance(im.tile[0][3], tuple)
                          else im.tile[0][3] if im.tile else "")
            decoder = "opencv" if im.mode in ("RGB", "RGBA") and ";16" in rawmode else "pillow"
    except Exception:
        if path.suffix.lower() in (".tif", ".tiff") and _opencv_tiff_size(path) is not None:
            height, width = _opencv_tiff_size(path)
            decoder = "opencv"
        else:
            raise R3LError(f"{path}: not a readable image (expected PNG, JPEG, BMP or TIFF)") from None
    if width <= 0 or height <= 0:
        raise R3LError(f"{path}: image has zero size ({width}x{height})")
    limit = max_pixels()
    if width * height > limit:
        raise R3LError(
            f"{path}: {width}x{height} image exceeds the pixel limit of {limit} (set R3L_MAX_PIXELS to raise it)"
        )
    return decoder


def _opencv_tiff_size(path: Path) -> tuple[int, int] | None:
    """(height, width) of a TIFF that Pillow cannot identify, decoded by OpenCV; None if unreadable."""
    try:
        # OpenCV has no header-only read, so the file size bounds the work instead: these are uncompressed
        # float TIFFs in practice, at least 4 bytes a sample.
        if path.stat().st_size // 4 > 4 * max_pixels():
            return None
        array = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    except cv2.error:
        return None
    return None if array is None else array.shape[:2]


def _split(array: np.ndarray, path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    """A decoded RGB-order array as (colour (H, W, C), C = 1 or 3; alpha (H, W, 1) or None), each uint8,
    uint16 or float32 in [0, 1]."""
    if array.ndim == 2:
        array = array[:, :, None]
    channels = array.shape[2]
    if channels not in (1, 2, 3, 4):
        raise R3LError(f"{path}: {channels}-channel image, expected gray or colour (with or without alpha)")
    if array.dtype in (np.int32, np.int64):
        array = np.clip(array, 0, 65535).astype(np.uint16)
    elif array.dtype == np.float64:
        array = array.astype(np.float32)
    elif array.dtype not in (np.uint8, np.uint16, np.float32):
        raise R3LError(f"{path}: pixel type {array.dtype} not supported, expected 8- or 16-bit or float")
    if array.dtype == np.float32:
        if not np.isfinite(array).all():
            raise R3LError(f"{path}: float image holds NaN or infinite values")
        low, high = float(array.min()), float(array.max())
        if low < -1e-3 or high > 1 + 1e-3:
            raise R3LError(f"{path}: float image with values in [{low:.4g}, {high:.4g}]; r3l reads float images "
                           "as intensities in [0, 1]")
        array = np.clip(array, 0.0, 1.0)
    if channels in (2, 4):
        return np.ascontiguousarray(array[:, :, : channels - 1]), np.ascontiguousarray(array[:, :, channels - 1 :])
    return np.ascontiguousarray(array), None


def decode(path: str | Path) -> tuple[np.ndarray, np.ndarray | None]:
    """Decode a file to its colour ``(H, W, C)`` (C = 1 or 3, RGB order) and its alpha ``(H, W, 1)`` or None,
    in the file's own type: uint8, uint16 or float32 (in [0, 1]).

    Pillow decodes everything but 16-bit colour, which it would cut to 8 bits, and TIFFs it cannot identify
    (float colour); OpenCV decodes those.
    """
    path = Path(path)
    array = _read_with_opencv(path) if _open_checked(path) == "opencv" else _read_with_pillow(path)
    return _split(array, path)


def read_native(path: str | Path) -> np.ndarray:
    """Decode a file to an ``(H, W, C)`` uint8 or uint16 array (C = 1 or 3, RGB order); alpha is dropped and
    float images become uint16 (what training and evaluation read)."""
    colour, _ = decode(path)
    if colour.dtype == np.float32:
        colour = np.round(colour * 65535).astype(np.uint16)
    return colour


def _read_with_opencv(path: Path) -> np.ndarray:
    try:
        array = cv2.imdecode(np.fromfile(path, dtype=np.uint8),
                             cv2.IMREAD_UNCHANGED | cv2.IMREAD_ANYDEPTH | cv2.IMREAD_IGNORE_ORIENTATION)
    except cv2.error:
        array = None
    if array is None or array.size == 0:
        raise R3LError(f"{path}: corrupt or truncated image, could not decode its pixels")
    if array.ndim == 3 and array.shape[2] >= 3:
        array = array[:, :, [2, 1, 0, *range(3, array.shape[2])]]
    return array


def _read_with_pillow(path: Path) -> np.ndarray:
    try:
        with warnings.catch_warnings(), Image.open(path) as im:
            warnings.simplefilter("ignore")
            im.load()
            im = ImageOps.exif_transpose(im)  # a phone's rotated JPEG comes out upright
            if im.mode.startswith("I;16"):
                return np.asarray(im, dtype=np.uint16)
            if im.mode in ("I", "F", "L", "LA", "RGB", "RGBA"):
                return np.asarray(im)
            if im.mode in ("P", "PA"):
                has_alpha = im.mode == "PA" or "transparency" in im.info
                return np.asarray(im.convert("RGBA" if has_alpha else "RGB"))
            if im.mode == "La":
                return np.asarray(im.convert("LA"))
            if im.mode == "1":
                return np.asarray(im.convert("L"))
            return np.asarray(im.convert("RGBA" if "A" in im.mode else "RGB"))
    except R3LError:
        raise
    except Exception:
        raise R3LError(f"{path}: corrupt or truncated image, could not decode its pixels") from None


def to_channels(native: np.ndarray, channels: int) -> np.ndarray:
    """Convert an (H, W, C) array to ``channels`` (1 or 3): colour to gray by BT.601 luma, gray to colour by copy."""
    have = native.shape[2]
    if have == channels:
        return native
    if channels == 3:
        return np.repeat(native, 3, axis=2)
    weights = np.array([0.299, 0.587, 0.114])
    luma = native.astype(np.float64) @ weights
    return np.round(luma)[:, :, None].astype(native.dtype)


def to_float(native: np.ndarray) -> np.ndarray:
    """uint8/uint16 array to float32 in [0, 1] (a float32 array is returned as it is)."""
    if native.dtype == np.float32:
        return native
    scale = 255.0 if native.dtype == np.uint8 else 65535.0
    return native.astype(np.float32) / np.float32(scale)


def _bits(array: np.ndarray) -> int:
    return {np.dtype(np.uint8): 8, np.dtype(np.uint16): 16}.get(array.dtype, 32)


def read_image(path: str | Path, channels: int | None = None) -> tuple[np.ndarray, ImageInfo]:
    """Read a file as ``(H, W, C)`` float32 in [0, 1] and describe what it held; alpha is dropped.

    ``channels`` converts to 1 (gray) or 3 (colour); ``None`` keeps the file's own channel count.
    """
    colour, alpha = decode(path)
    info = ImageInfo(colour.shape[0], colour.shape[1], colour.shape[2], _bits(colour), alpha is not None)
    if channels is not None:
        if colour.dtype == np.float32:
            colour = np.round(colour * 65535).astype(np.uint16)
        colour = to_channels(colour, channels)
    return to_float(colour), info


def read_image_with_alpha(path: str | Path) -> tuple[np.ndarray, np.ndarray | None, ImageInfo]:
    """Read a file as colour ``(H, W, C)`` float32 in [0, 1], its alpha channel ``(H, W, 1)`` in the file's own
    type (uint8, uint16, float32) or None, and what it held, its ICC profile and EXIF block included. Write them
    back with :func:`write_image` (``metadata=info``)."""
    colour, alpha = decode(path)
    icc, exif = _metadata(Path(path))
    info = ImageInfo(colour.shape[0], colour.shape[1], colour.shape[2], _bits(colour), alpha is not None, icc, exif)
    return to_float(colour), alpha, info


def _metadata(path: Path) -> tuple[bytes | None, bytes | None]:
    """The ICC profile and the EXIF block (orientation reset to upright, as decoding turns the pixels) of a file
    Pillow reads; ``(None, None)`` for one it does not."""
    try:
        with warnings.catch_warnings(), Image.open(path) as im:
            warnings.simplefilter("ignore")
            exif = im.getexif()
            if ExifTags.Base.Orientation in exif:
                exif[ExifTags.Base.Orientation] = 1
            return im.info.get("icc_profile") or None, (exif.tobytes() if len(exif) else None)
    except Exception:
        return None, None


def quantize(image: np.ndarray, bits: int = 8) -> np.ndarray:
    """Float image in [0, 1] (values outside are clipped) to uint8 (8), uint16 (16) or float32 (32)."""
    if bits == 32:
        return np.clip(image, 0.0, 1.0).astype(np.float32)
    peak = 255 if bits == 8 else 65535
    dtype = np.uint8 if bits == 8 else np.uint16
    return np.round(np.clip(image, 0.0, 1.0) * peak).astype(dtype)


def output_bits(path: str | Path, bits: int) -> int:
    """The bit depth ``path`` will be written with for an image of ``bits``; a clear error for an unknown format
    or a 16-bit image in a format that holds only 8 bits. Float (32) images stay float in TIFF and become
    16-bit in PNG."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in IMAGE_EXTENSIONS:
        raise R3LError(f"{path}: unknown output format {suffix!r}, expected one of {', '.join(IMAGE_EXTENSIONS)}")
    if bits == 32 and suffix not in (".tif", ".tiff"):
        bits = 16
    if bits == 16 and suffix not in (".png", ".tif", ".tiff"):
        raise R3LError(f"{path}: a 16-bit image needs a .png or .tif output")
    return bits


def write_image(path: str | Path, image: np.ndarray, bits: int = 8, channels: int | None = None,
                alpha: np.ndarray | None = None, metadata: ImageInfo | None = None) -> None:
    """Write a float ``(H, W, C)`` or ``(H, W)`` image in [0, 1] atomically, with 8, 16 or 32 (float) bits.

    ``channels`` converts before writing (e.g. a gray result for a colour input); ``alpha`` ``(H, W, 1)`` is
    written unchanged beside the colour (in PNG and TIFF; JPEG and BMP have no alpha, so it is left out with a
    warning). TIFFs are written uncompressed, which every TIFF reader opens. The file appears complete or not
    at all: it is written beside the target and renamed. ``metadata``'s ICC profile and EXIF block (what
    :func:`read_image_with_alpha` found) are written with 8-bit PNG, JPEG and TIFF outputs and gray 16-bit ones;
    a 16-bit colour output leaves them out with a warning.
    """
    path = Path(path)
    bits = output_bits(path, bits)
    suffix = path.suffix.lower()
    if image.ndim == 2:
        image = image[:, :, None]
    native = quantize(image, bits)
    if channels is not None:
        native = to_channels(native, channels)
    if alpha is not None and suffix not in (".png", ".tif", ".tiff"):
        warn(f"{path}: {suffix} holds no alpha channel; the image's transparency is not written")
        alpha = None
    if alpha is not None:
        if alpha.dtype != native.dtype:
            alpha = quantize(to_float(alpha), bits)
        if native.shape[2] == 1 and native.dtype != np.uint8:
            # The encoders here write gray + alpha at 8 bits only: deeper gray + alpha is written as RGBA.
            native = to_channels(native, 3)
        native = np.concatenate([native, alpha.reshape(*native.shape[:2], 1)], axis=2)
    extra = {}
    if metadata is not None:
        extra = {k: v for k, v in (("icc_profile", metadata.icc_profile), ("exif", metadata.exif)) if v}
    pillow_mode = _pillow_mode(native) if extra or native.shape[2] == 2 else None
    if extra and pillow_mode is None:
        warn(f"{path}: the input's colour profile and EXIF data are not written with {bits}-bit colour")
    if pillow_mode is not None and suffix in (".png", ".jpg", ".jpeg", ".tif", ".tiff"):
        buffer = io.BytesIO()
        fmt = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG"}.get(suffix, "TIFF")
        quality = {"quality": 95} if fmt == "JPEG" else {}  # OpenCV's default, which the other outputs get
        # Pillow reads the mode (L, LA, RGB, RGBA, I;16) from the array's shape and type.
        Image.fromarray(np.ascontiguousarray(native if native.shape[2] != 1 else native[:, :, 0])) \
            .save(buffer, format=fmt, **quality, **extra)
        atomic_write_bytes(path, buffer.getvalue())
        return
    if native.shape[2] >= 3:
        native = native[:, :, [2, 1, 0, *range(3, native.shape[2])]]
    params = [cv2.IMWRITE_TIFF_COMPRESSION, 1] if suffix in (".tif", ".tiff") else []
    ok, encoded = cv2.imencode(suffix, np.ascontiguousarray(native), params)
    if not ok:
        raise R3LError(f"{path}: could not encode the image")
    atomic_write_bytes(path, encoded.tobytes())


def _pillow_mode(native: np.ndarray) -> str | None:
    """The Pillow mode that writes ``native`` ``(H, W, C)`` as it is, or None (16-bit colour: OpenCV's)."""
    if native.dtype == np.uint8:
        return {1: "L", 2: "LA", 3: "RGB", 4: "RGBA"}[native.shape[2]]
    if native.dtype == np.uint16 and native.shape[2] == 1:
        return "I;16"
    return None


def list_images(folder: str | Path) -> list[Path]:
    """Image files directly in ``folder``, sorted by name; a clear error if there are none."""
    folder = Path(folder)
    if not folder.exists():
        raise R3LError(f"{folder}: no such folder")
    if not folder.is_dir():
        raise R3LError(f"{folder}: not a folder")
    try:
        files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())
    except PermissionError:
        raise R3LError(f"{folder}: folder is not readable") from None
    if not files:
        raise R3LError(f"{folder}: no image files ({', '.join(IMAGE_EXTENSIONS)}) in this folder")
    return files
