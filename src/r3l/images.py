"""Reading and writing image files as float arrays in [0, 1].

Files are decoded with OpenCV (8- and 16-bit, gray or colour, PNG/JPEG/BMP/TIFF); Pillow reads the header
first so that the size is checked against a pixel limit before any pixel is decoded. Arrays are
``(H, W, C)`` float32 in [0, 1]; colour is RGB order.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from r3l.errors import R3LError

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
    """What a file held: its size, channel count and bit depth (8 or 16)."""

    height: int
    width: int
    channels: int
    bits: int


def _open_checked(path: Path) -> bool:
    """Check that ``path`` is an image within the pixel limit; return whether it holds 16-bit colour."""
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
            deep_colour = im.mode in ("RGB", "RGBA") and ";16" in rawmode
    except Exception:
        raise R3LError(f"{path}: not a readable image (expected PNG, JPEG, BMP or TIFF)") from None
    if width <= 0 or height <= 0:
        raise R3LError(f"{path}: image has zero size ({width}x{height})")
    limit = max_pixels()
    if width * height > limit:
        raise R3LError(
            f"{path}: {width}x{height} image exceeds the pixel limit of {limit} (set R3L_MAX_PIXELS to raise it)"
        )
    return deep_colour


def read_header(path: str | Path) -> tuple[int, int]:
    """Return ``(height, width)`` from the file header without decoding pixels."""
    path = Path(path)
    _open_checked(path)
    with Image.open(path) as im:
        return im.size[1], im.size[0]


def _to_native(array: np.ndarray, path: Path) -> np.ndarray:
    """A decoded RGB-order array as (H, W, C), C = 1 or 3, in uint8 or uint16; alpha dropped."""
    if array.ndim == 2:
        array = array[:, :, None]
    channels = array.shape[2]
    if channels in (2, 4):  # alpha
        array = array[:, :, : channels - 1]
    elif channels not in (1, 3):
        raise R3LError(f"{path}: {channels}-channel image, expected gray or colour")
    if array.dtype == np.uint8 or array.dtype == np.uint16:
        return np.ascontiguousarray(array)
    if array.dtype in (np.int32, np.int64):
        return np.ascontiguousarray(np.clip(array, 0, 65535).astype(np.uint16))
    if array.dtype in (np.float32, np.float64):
        clean = np.nan_to_num(array, nan=0.0, posinf=1.0, neginf=0.0)
        return np.ascontiguousarray(np.round(np.clip(clean, 0.0, 1.0) * 65535).astype(np.uint16))
    raise R3LError(f"{path}: pixel type {array.dtype} not supported, expected 8- or 16-bit")


def read_native(path: str | Path) -> np.ndarray:
    """Decode a file to an ``(H, W, C)`` uint8 or uint16 array (C = 1 or 3, RGB order).

    Pillow decodes everything but 16-bit colour, which it would cut to 8 bits; OpenCV decodes that.
    """
    path = Path(path)
    array = _read_with_opencv(path) if _open_checked(path) else _read_with_pillow(path)
    return _to_native(array, path)


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
            if im.mode.startswith("I;16"):
                return np.asarray(im, dtype=np.uint16)
            if im.mode in ("I", "F", "L", "RGB", "RGBA"):
                return np.asarray(im)
            if im.mode in ("P", "PA"):
                return np.asarray(im.convert("RGBA"))
            if im.mode in ("1", "LA", "La"):
                return np.asarray(im.convert("L"))
            return np.asarray(im.convert("RGB"))
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
    """uint8/uint16 array to float32 in [0, 1]."""
    scale = 255.0 if native.dtype == np.uint8 else 65535.0
    return native.astype(np.float32) / np.float32(scale)


def read_image(path: str | Path, channels: int | None = None) -> tuple[np.ndarray, ImageInfo]:
    """Read a file as ``(H, W, C)`` float32 in [0, 1] and describe what it held.

    ``channels`` converts to 1 (gray) or 3 (colour); ``None`` keeps the file's own channel count.
    """
    native = read_native(path)
    info = ImageInfo(native.shape[0], native.shape[1], native.shape[2], 8 if native.dtype == np.uint8 else 16)
    if channels is not None:
        native = to_channels(native, channels)
    return to_float(native), info


def quantize(image: np.ndarray, bits: int = 8) -> np.ndarray:
    """Float image in [0, 1] (values outside are clipped) to uint8 or uint16."""
    peak = 255 if bits == 8 else 65535
    dtype = np.uint8 if bits == 8 else np.uint16
    return np.round(np.clip(image, 0.0, 1.0) * peak).astype(dtype)


def write_image(path: str | Path, image: np.ndarray, bits: int = 8, channels: int | None = None) -> None:
    """Write a float ``(H, W, C)`` or ``(H, W)`` image in [0, 1] atomically.

    ``channels`` converts before writing (e.g. a gray result for a colour input). The file appears complete or
    not at all: it is written beside the target and renamed.
    """
    path = Path(path)
    if image.ndim == 2:
        image = image[:, :, None]
    native = quantize(image, bits)
    if channels is not None:
        native = to_channels(native, channels)
    if native.shape[2] == 3:
        native = native[:, :, ::-1]
    suffix = path.suffix.lower()
    if suffix not in IMAGE_EXTENSIONS:
        raise R3LError(f"{path}: unknown output format {suffix!r}, expected one of {', '.join(IMAGE_EXTENSIONS)}")
    if bits == 16 and suffix not in (".png", ".tif", ".tiff"):
        raise R3LError(f"{path}: a 16-bit image needs a .png or .tif output")
    ok, encoded = cv2.imencode(suffix, np.ascontiguousarray(native))
    if not ok:
        raise R3LError(f"{path}: could not encode the image")
    atomic_write_bytes(path, encoded.tobytes())


def atomic_write_bytes(path: str | Path, data: bytes, backup: str | Path | None = None) -> None:
    """Write ``data`` to ``path`` via a temporary file in the same folder, fsync and rename.

    The file at ``path`` is replaced only once the new content is complete on disk. With ``backup``, the
    previous file is first renamed there, so a crash between the two renames leaves the backup and the
    complete temporary file, never a half-written ``path``.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise R3LError(f"{path.parent}: could not create the folder ({exc.strerror or exc})") from None
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        if backup is not None and path.exists():
            os.replace(path, backup)
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise R3LError(f"{path}: could not write ({exc.strerror or exc}); the previous file is unchanged") from None


def _fsync_dir(folder: Path) -> None:
    """Make the renames durable (a no-op where folders cannot be opened, e.g. on Windows)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


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
