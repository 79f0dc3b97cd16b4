"""Training logs (JSONL + CSV, TensorBoard when installed) and the PNG curves drawn from them.

Files in a run directory:

``log.jsonl``  one JSON object per line: ``{"type": "train", "iteration", "epoch", "loss", "lr",
               "it_per_s", "elapsed_s", "skipped"}``, ``{"type": "val", "iteration", "epoch", "set",
               "psnr", "ssim", "best"}`` and ``{"type": "event", "iteration", "message"}``
``train.csv``  the train records; ``val.csv`` the validation records
``tensorboard/`` scalars ``train/loss``, ``train/lr``, ``val/psnr``, ``val/ssim`` (optional)
``plots/loss.png``, ``plots/psnr.png``

On resume, records after the resumed iteration (written before an interruption) are dropped
(and hidden in TensorBoard with ``purge_step``), so the curves show exactly one history.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from pathlib import Path
from typing import Any, Sequence

from ..errors import SisrError
from ..utils.fs import atomic_write_text
from ..utils.plot import line_chart, save_png

TRAIN_FIELDS = ("iteration", "epoch", "loss", "lr", "it_per_s", "elapsed_s", "skipped")
VAL_FIELDS = ("iteration", "epoch", "set", "psnr", "ssim", "best")


class RunLog:
    """Appends records to the run's log files (only the main process creates one)."""

    def __init__(self, run_dir: Path, tensorboard: bool | None = None, purge_step: int | None = None):
        """``purge_step``: TensorBoard hides the events from that step on (those after the resumed
        checkpoint, as :func:`truncate_logs` drops them from the other files)."""
        self.dir = Path(run_dir)
        self.jsonl, self.train_csv, self.val_csv = (self.dir / n for n in ("log.jsonl", "train.csv", "val.csv"))
        writer = summary_writer_class(tensorboard)
        self.writer = writer(str(self.dir / "tensorboard"), purge_step=purge_step) if writer else None

    def write(self, record: dict[str, Any]) -> None:
        with open(self.jsonl, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
        kind = record.get("type")
        if kind in ("train", "val"):
            path, fields = (self.train_csv, TRAIN_FIELDS) if kind == "train" else (self.val_csv, VAL_FIELDS)
            new = not path.exists() or path.stat().st_size == 0
            with open(path, "a", encoding="utf-8", newline="") as f:
                f.write(_csv_text(fields, [record], header=new))
        if self.writer is not None and kind in ("train", "val"):
            step = record["iteration"]
            for key in ("loss", "lr", "it_per_s") if kind == "train" else ("psnr", "ssim"):
                value = record.get(key)
                if isinstance(value, (int, float)) and math.isfinite(value):
                    self.writer.add_scalar(f"{kind}/{key}", value, step)
            self.writer.flush()

    def sync(self) -> None:
        """Flush the log files to disk (before a checkpoint is committed)."""
        from ..utils.fs import fsync_file

        for path in (self.jsonl, self.train_csv, self.val_csv):
            if path.is_file():
                fsync_file(path)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def summary_writer_class(tensorboard: bool | None):
    """TensorBoard's ``SummaryWriter``, or None when not wanted (False) or not installed (None)."""
    if tensorboard is False:
        return None
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        if tensorboard:
            raise SisrError("log.tensorboard: the tensorboard package is not installed "
                            "(pip install 'sisr[tensorboard]')") from None
        return None
    return SummaryWriter


def truncate_logs(run_dir: str | os.PathLike, iteration: int) -> None:
    """Drop records after ``iteration`` (left by a run interrupted after its last checkpoint)."""
    root = Path(run_dir)
    records = [r for r in read_log(root) if r.get("iteration", 0) <= iteration]
    atomic_write_text(root / "log.jsonl", "".join(json.dumps(r) + "\n" for r in records), overwrite=True)
    for name, kind, fields in (("train.csv", "train", TRAIN_FIELDS), ("val.csv", "val", VAL_FIELDS)):
        rows = [r for r in records if r.get("type") == kind]
        atomic_write_text(root / name, _csv_text(fields, rows, header=True), overwrite=True)


def _csv_text(fields: Sequence[str], rows: list[dict[str, Any]], header: bool) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(fields), extrasaction="ignore", lineterminator="\n")
    if header:
        writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def read_log(run_dir: str | os.PathLike) -> list[dict[str, Any]]:
    """The records of ``<run_dir>/log.jsonl`` (a torn last line is ignored)."""
    path = Path(run_dir) / "log.jsonl"
    if not path.is_file():
        return []
    records = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


def plot_runs(run_dirs: Sequence[str | os.PathLike], out_dir: str | os.PathLike, *,
              overwrite: bool = False) -> list[Path]:
    """``loss.png`` and ``psnr.png`` (validation) in ``out_dir``, one curve per run."""
    runs = [Path(r) for r in run_dirs]
    names = [r.name for r in runs]
    names = names if len(set(names)) == len(names) else [str(r) for r in runs]  # runs/a/x and runs/b/x
    losses, psnrs, sets = {}, {}, set()
    for run, name in zip(runs, names):
        if not (run / "log.jsonl").is_file():
            raise SisrError(f"{run}: not a training run (no log.jsonl)")
        records = read_log(run)
        label = name if len(runs) > 1 else "loss"
        losses[label] = [(r["iteration"], r["loss"]) for r in records
                         if r.get("type") == "train" and r.get("loss") is not None]
        vals = [r for r in records if r.get("type") == "val"]
        sets.update(r.get("set", "") for r in vals)
        psnrs[name if len(runs) > 1 else (vals[0].get("set", "val") if vals else "val")] = [
            (r["iteration"], r["psnr"]) for r in vals]
    title = f" ({runs[0].name})" if len(runs) == 1 else ""
    out = Path(out_dir)
    paths = [
        save_png(line_chart(losses, title=f"training loss{title}", xlabel="iteration", ylabel="loss"),
                 out / "loss.png", overwrite=overwrite),
        save_png(line_chart(psnrs, title=f"validation PSNR{title}", xlabel="iteration",
                            ylabel=f"Y PSNR (dB){', ' + '/'.join(sorted(sets)) if sets else ''}"),
                 out / "psnr.png", overwrite=overwrite),
    ]
    return paths
