"""Image grids with captions, for the demo and the benchmark."""

from __future__ import annotations

import cv2
import numpy as np


def label(tile: np.ndarray, text: str) -> np.ndarray:
    """A uint8 ``(H, W)`` tile with ``text`` on a black band across its top."""
    tile = tile.copy()
    cv2.rectangle(tile, (0, 0), (tile.shape[1], 22), 0, -1)
    cv2.putText(tile, text, (4, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.5, 255, 1, cv2.LINE_AA)
    return tile


def grid(rows: list[list[np.ndarray]], gap: int = 4) -> np.ndarray:
    """Stack rows of uint8 ``(H, W)`` tiles into one image, padding short rows with black."""
    lines = [np.hstack([np.pad(t, ((0, 0), (0, gap))) for t in row]) for row in rows]
    width = max(line.shape[1] for line in lines)
    return np.vstack([np.pad(line, ((0, gap), (0, width - line.shape[1]))) for line in lines])
