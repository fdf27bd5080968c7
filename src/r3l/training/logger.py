"""Metrics to a JSONL file and, when installed, TensorBoard; names follow CleanRL's (``losses/approx_kl``)."""

from __future__ import annotations

import warnings
from pathlib import Path

from r3l.errors import warn
from r3l.io.files import to_json


class MetricLogger:
    def __init__(self, run_dir: Path, tensorboard: bool = True):
        self.path = run_dir / "metrics.jsonl"
        try:
            self.file = open(self.path, "a", buffering=1)
        except OSError as exc:
            from r3l.errors import R3LError

            raise R3LError(f"{self.path}: cannot write the metrics log ({exc.strerror or exc})") from None
        self.writer = None
        if tensorboard:
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    from torch.utils.tensorboard import SummaryWriter
                self.writer = SummaryWriter(str(run_dir / "tensorboard"))
            except ImportError:
                warn("tensorboard is not installed (pip install 'r3l[tensorboard]'); logging to JSONL only")

    def log(self, episode: int, metrics: dict[str, float]) -> None:
        self.file.write(to_json({"episode": episode, **metrics}) + "\n")
        if self.writer is not None:
            for name, value in metrics.items():
                self.writer.add_scalar(name, value, episode)

    def close(self) -> None:
        self.file.close()
        if self.writer is not None:
            self.writer.close()
