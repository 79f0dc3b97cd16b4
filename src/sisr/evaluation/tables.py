"""Results in the papers' layout: rows = method and scale (plain and "+"), columns = datasets (PSNR / SSIM on Y).

:func:`evaluate_table` scores one model's weights for several scales, plain and with the self-ensemble, in one
call; :func:`write_table` writes Markdown, CSV and LaTeX beside ``results.json`` and ``env.json``, each run's
own files in a sub-folder (``x<s>`` / ``x<s>-plus``).
"""

from __future__ import annotations

import csv
import io
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from ..utils.environment import environment
from ..utils.fs import atomic_write_text, check_outputs
from .protocol import EvalResults, evaluate, save_results

TABLE_FILES = ("results.json", "table.md", "table.csv", "table.tex", "env.json")
PAPER_DATASETS = ("Set5", "Set14", "B100", "Urban100", "Manga109")


@dataclass
class TableRow:
    label: str  # "defian-s" or "defian-s+"
    scale: int
    results: EvalResults


def evaluate_table(model: str | os.PathLike, weights: Mapping[int, str | os.PathLike | None], *,
                   self_ensemble: Sequence[bool] = (False, True), label: str | None = None,
                   **evaluate_kwargs: Any) -> list[TableRow]:
    """Score ``model`` with ``weights[scale]`` (None: the shipped or parameter-free model) at every scale,
    once per ``self_ensemble`` setting; ``evaluate_kwargs`` go to :func:`evaluate` (``data_root``, ``datasets``...)."""
    from ..inference.options import RunOptions

    base = evaluate_kwargs.pop("options", None) or RunOptions()
    name = label or Path(str(model)).stem
    rows = []
    for scale, file in sorted(weights.items()):
        for plus in self_ensemble:
            res = evaluate(model if file is None else file, scales=[scale],
                           options=base.replace(self_ensemble=plus), **evaluate_kwargs)
            rows.append(TableRow(name + ("+" if plus else ""), scale, res))
    return rows


def table_cells(rows: Sequence[TableRow], datasets: Sequence[str]) -> tuple[list[str], list[list[str]]]:
    """Header and cells: method, scale, then ``PSNR / SSIM`` per dataset ("-" where not scored)."""
    header = ["method", "scale", *datasets]
    cells = []
    for row in sorted(rows, key=lambda r: (r.scale, r.label)):
        scored = {s.dataset: s for s in row.results.sets}
        cells.append([row.label, f"x{row.scale}"] + [
            f"{scored[d].psnr_y:.2f} / {scored[d].ssim_y:.4f}" if d in scored else "-" for d in datasets])
    return header, cells


def render(rows: Sequence[TableRow], datasets: Sequence[str], fmt: str) -> str:
    header, cells = table_cells(rows, datasets)
    if fmt == "csv":
        buf = io.StringIO()
        csv.writer(buf, lineterminator="\n").writerows([header, *cells])
        return buf.getvalue()
    if fmt == "tex":
        esc: Callable[[str], str] = lambda s: s.replace("_", r"\_")  # noqa: E731
        lines = [r"\begin{tabular}{ll" + "c" * len(datasets) + "}", r"\hline",
                 " & ".join(map(esc, header)) + r" \\", r"\hline"]
        lines += [" & ".join(map(esc, c)) + r" \\" for c in cells] + [r"\hline", r"\end{tabular}"]
        return "\n".join(lines) + "\n"
    lines = ["PSNR (dB) / SSIM on Y, paper protocol (shave = scale); '+' = self-ensemble", "",
             "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(c) + " |" for c in cells]) + "\n"


def write_table(rows: Sequence[TableRow], out_dir: str | os.PathLike, datasets: Sequence[str] = (), *,
                command: str = "", overwrite: bool = False) -> Path:
    """The table files (and each run's own files in ``x<s>[-plus]/``) in ``out_dir``; returns it."""
    out = Path(out_dir)
    check_outputs(out, TABLE_FILES, overwrite)
    present = {s.dataset for r in rows for s in r.results.sets}
    datasets = [d for d in (datasets or PAPER_DATASETS) if d in present] or sorted(present)
    for row in rows:
        sub = out / f"x{row.scale}{'-plus' if row.label.endswith('+') else ''}"
        save_results(row.results, sub, overwrite=overwrite)
    summary = {"format": "sisr-eval-table", "command": command, "datasets": datasets,
               "rows": [{"method": r.label, "scale": r.scale, "folder": f"x{r.scale}{'-plus' if r.label.endswith('+') else ''}",
                         "scores": {s.dataset: {"psnr_y": s.psnr_y, "ssim_y": s.ssim_y} for s in r.results.sets}}
                        for r in rows]}
    texts = {"results.json": json.dumps(summary, indent=2) + "\n", "table.md": render(rows, datasets, "md"),
             "table.csv": render(rows, datasets, "csv"), "table.tex": render(rows, datasets, "tex"),
             "env.json": json.dumps(environment(), indent=2) + "\n"}
    for name, text in texts.items():
        atomic_write_text(out / name, text, overwrite=overwrite)
    return out
