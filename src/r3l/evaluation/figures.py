"""Image grids with captions (the demo and the benchmark), and the benchmark's table and plot."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from r3l.io.files import atomic_write_bytes


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


def _cell(psnr: float, paper: float | None) -> str:
    if paper is None:
        return f"{psnr:.2f}"
    return f"{psnr:.2f} ({paper:.2f}, {psnr - paper:+.2f})"


def table_markdown(summary: dict) -> str:
    """The paper's table layout: rows are σ_test and the average, columns are methods."""
    names = list(summary["methods"])
    first = next(iter(summary["methods"].values()))
    count = max(v["images"] for v in first["sigmas"].values())
    lines = [
        f"# {summary['name']}: PSNR (dB) on {Path(summary['data']).name} ({count} images), "
        f"trained at sigma {summary['sigma_train']:g}",
        "",
        "Each cell: ours (published, ours - published) where the paper reports the method on BSD68.",
        "",
        "| sigma_test | " + " | ".join(names) + " |",
        "|---" * (len(names) + 1) + "|",
    ]
    for sigma in summary["sigmas"]:
        key = f"{sigma:g}"
        cells = [_cell(m["sigmas"][key]["psnr"], m["sigmas"][key]["published"]) for m in summary["methods"].values()]
        lines.append(f"| {key} | " + " | ".join(cells) + " |")
    cells = [_cell(m["average"], m["published_average"]) for m in summary["methods"].values()]
    lines.append("| avg | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot_psnr(summary: dict, path: Path) -> bool:
    """PSNR against σ_test per method, published points marked; False if matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=120)
    sigmas = summary["sigmas"]
    for i, (name, m) in enumerate(summary["methods"].items()):
        colour = f"C{i % 10}"
        ax.plot(sigmas, [m["sigmas"][f"{s:g}"]["psnr"] for s in sigmas], "o-", color=colour, label=name)
        paper = [(s, m["sigmas"][f"{s:g}"]["published"]) for s in sigmas if m["sigmas"][f"{s:g}"]["published"]]
        if paper:
            ax.plot(*zip(*paper), "x--", color=colour, alpha=0.6, label=f"{name} (published)")
    ax.axvline(summary["sigma_train"], color="grey", lw=0.8, ls=":")
    ax.set_xlabel("test noise level sigma")
    ax.set_ylabel("PSNR (dB)")
    ax.set_title(f"{summary['name']}: trained at sigma {summary['sigma_train']:g}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    import io

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    atomic_write_bytes(path, buffer.getvalue())
    return True
