"""What a run did epoch by epoch: one entry per epoch in its record (``<run>.json``, key ``history``), the same
scalars in TensorBoard (``tensorboard: true``), and one console line per epoch when stdout is not a terminal.

    log = EpochLog(run=1, tensorboard_dir=folder / "tb" / "run_1")
    log.add({"epoch": 1, "train_loss": 0.9, "train_accuracy": 71.2, "lr": 0.1, "seconds": 3.1, "nonfinite_steps": 0})
    record["history"] = log.entries

A resumed run continues the history its resumable state carries (training.train_run sets ``log.entries``); it
never restarts or repeats it. TensorBoard's events after the resumed epoch are purged, so a curve has each epoch once.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Dict, List, Optional

from base.errors import UserError

SCALARS = ("train_loss", "train_accuracy", "lr", "seconds", "nonfinite_steps", "val_accuracy")
TENSORBOARD_INSTALL = ".venv/bin/pip install tensorboard"


class TensorBoardMissing(UserError, ImportError):
    """tensorboard: true without the tensorboard package."""


def summary_writer_class():
    """torch's SummaryWriter, or a one-line error that says how to install what it needs."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as error:
        raise TensorBoardMissing(f"tensorboard: true needs the tensorboard package ({error}); install it with "
                                 f"`{TENSORBOARD_INSTALL}`, or set tensorboard: false") from None
    return SummaryWriter


class EpochLog:
    """Collects the history of one run and shows it: the record's list, TensorBoard, a line per epoch."""

    def __init__(self, run: int, tensorboard_dir: Optional[Path] = None, console: Optional[bool] = None):
        self.run = run  # 1-based
        self.entries: List[Dict[str, Any]] = []  # a resumed run sets those of its state (training.train_run)
        self.console = (not sys.stdout.isatty()) if console is None else console  # tqdm shows only on a terminal
        self.tensorboard_dir = tensorboard_dir
        self.writer = None
        if tensorboard_dir is not None:
            summary_writer_class()  # refuse at the start of a run, not after its first epoch

    def add(self, entry: Dict[str, Any]) -> None:
        self.entries.append(dict(entry))
        if self.tensorboard_dir is not None and self.writer is None:  # events from this epoch on replace older ones
            self.writer = summary_writer_class()(log_dir=str(self.tensorboard_dir), purge_step=entry["epoch"])
        if self.writer is not None:
            for key in SCALARS:
                if entry.get(key) is not None:
                    self.writer.add_scalar(key, entry[key], entry["epoch"])
            self.writer.flush()
        if self.console:
            print(epoch_line(self.run, entry), flush=True)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def epoch_line(run: int, entry: Dict[str, Any]) -> str:
    """One line per epoch: ``Run 1 | Epoch 3 | Loss:0.4211 | Train acc:88.12 | LR:0.1 | 2.9s`` (+ validation)."""
    loss = "nan" if entry["train_loss"] is None else f"{entry['train_loss']:.4f}"  # no finite step in the epoch
    line = (f"Run {run} | Epoch {entry['epoch']} | Loss:{loss} | Train acc:{entry['train_accuracy']:.2f} | "
            f"LR:{entry['lr']:.4g} | {entry['seconds']:.1f}s")
    if entry.get("nonfinite_steps"):
        line += f" | non-finite steps:{entry['nonfinite_steps']}"
    if entry.get("val_accuracy") is not None:
        line += f" | Val acc:{entry['val_accuracy']:.2f}"
    return line
