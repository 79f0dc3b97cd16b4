"""An experiment folder as the paper's table: our figures beside the paper's, seed spread, ordering.

For an ablation: one row per variant (in the paper's order) with the parameter count and, per dataset,
our PSNR (mean over seeds, with the range max - min as the spread), the paper's, and both as
differences from the first variant. Below it, per dataset, whether our ordering of the variants
agrees with the paper's: Spearman's rank correlation and a count of variant pairs whose ordering
agrees / disagrees by more than their seed spread ("beyond noise") or not.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import statistics
from itertools import combinations
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..utils.fs import atomic_write_text
from ..utils.plot import bar_chart, save_png
from .definitions import COMPLEXITY_COLUMNS, get_experiment
from .runner import complexity_path, run_name

FORMATS = ("md", "csv", "json", "tex")


def collect(folder: str | os.PathLike) -> dict[str, Any]:
    """The rows of an experiment folder (what every format is written from)."""
    folder = Path(folder)
    meta_path = folder / "experiment.json"
    if not meta_path.is_file():
        raise ConfigError(f"{folder}: not an experiment folder (no experiment.json)")
    meta = json.loads(meta_path.read_text())
    exp = get_experiment(meta["experiment"])
    if exp.kind == "complexity":
        rows = [{"label": r.label, "model": r.model, "scale": s, "paper": dict(r.paper.get(s, {})),
                 "ours": json.loads(p.read_text()) if (p := complexity_path(folder, exp, r, s)).is_file() else None}
                for r in exp.rows for s in exp.scales]
        return {"experiment": exp.name, "kind": exp.kind, "title": f"{exp.paper} {exp.table}: {exp.title}",
                "columns": list(exp.columns), "flops_are": exp.flops_are, "rows": rows}
    if exp.kind == "evaluation":
        path = folder / "eval" / "result.json"
        if not path.is_file():
            raise ConfigError(f"{folder}: not scored yet (no eval/result.json)")
        return {"experiment": exp.name, "kind": exp.kind, "title": f"{exp.paper} {exp.table}: {exp.title}",
                **json.loads(path.read_text())}
    rows = []
    for variant in exp.variants:
        results = []
        for seed in range(1, int(meta["options"].get("seeds", 1)) + 1):
            path = folder / "runs" / run_name(exp, variant, seed) / "result.json"
            if path.is_file():
                results.append(json.loads(path.read_text()))
        rows.append({"label": variant.label, "paper": dict(variant.paper), "results": results,
                     "params": results[0]["params"] if results else None})
    return {"experiment": exp.name, "kind": exp.kind, "title": f"{exp.paper} {exp.table}: {exp.title}",
            "datasets": list(exp.datasets), "options": meta["options"], "rows": rows,
            "agreement": {d: agreement(rows, d) for d in exp.datasets}}


def _ours(row: dict, dataset: str) -> list[float]:
    return [r["scores"][dataset]["psnr"] for r in row["results"] if dataset in r.get("scores", {})]


def _paper(row: dict, dataset: str) -> float | None:
    value = (row["paper"].get("psnr") or {}).get(dataset)
    return float(value) if value is not None else None


def agreement(rows: list[dict], dataset: str) -> dict[str, Any]:
    """Spearman's rho between our means and the paper's, and pairwise ordering counts against the spread."""
    pairs = [(statistics.fmean(o), max(o) - min(o) if len(o) > 1 else None, p)
             for o, p in ((_ours(r, dataset), _paper(r, dataset)) for r in rows) if o and p is not None]
    counts = {"agree_beyond_noise": 0, "agree_within_noise": 0, "disagree_beyond_noise": 0,
              "disagree_within_noise": 0, "paper_tied": 0}
    for (ma, sa, pa), (mb, sb, pb) in combinations(pairs, 2):
        if pa == pb:
            counts["paper_tied"] += 1
            continue
        agree = (ma - mb) * (pa - pb) > 0
        spread = max(sa or 0.0, sb or 0.0) if sa is not None and sb is not None else None
        beyond = spread is not None and abs(ma - mb) > spread
        counts[f"{'agree' if agree else 'disagree'}_{'beyond' if beyond else 'within'}_noise"] += 1
    rho = spearman([m for m, _, _ in pairs], [p for _, _, p in pairs]) if len(pairs) > 2 else None
    return {"variants": len(pairs), "spearman": rho, **counts,
            "spread_known": bool(pairs) and all(s is not None for _, s, _ in pairs)}


def spearman(a: list[float], b: list[float]) -> float | None:
    ra, rb = _ranks(a), _ranks(b)
    sa, sb = statistics.pstdev(ra), statistics.pstdev(rb)
    if sa == 0 or sb == 0:
        return None
    ma, mb = statistics.fmean(ra), statistics.fmean(rb)
    return sum((x - ma) * (y - mb) for x, y in zip(ra, rb)) / (len(ra) * sa * sb)


def _ranks(values: list[float]) -> list[float]:
    order = sorted(range(len(values)), key=values.__getitem__)
    ranks = [0.0] * len(values)
    i = 0
    while i < len(order):  # ties share their mean rank
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return ranks


def _stand_in(data: dict[str, Any], dataset: str) -> str:
    """`` (on X)`` when our figures for ``dataset`` were measured on another set X (a held-out validation slice
    standing in for the paper's validation set), else nothing."""
    sets = sorted({r["scores"][dataset]["set"] for row in data["rows"] for r in row["results"]
                   if r["scores"].get(dataset, {}).get("validation")} - {dataset})
    return f" (on {', '.join(sets)})" if sets else ""


def _fmt(value: float | None, spec: str = ".2f") -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else format(value, spec)


def table_rows(data: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Header and cells (strings) of an experiment's table."""
    if data["kind"] == "evaluation":
        return _evaluation_rows(data)
    if data["kind"] == "complexity":
        return _complexity_rows(data)
    header = ["variant", "params K (ours)", "params K (paper)"]
    for d in data["datasets"]:
        header += [f"{d} ours{_stand_in(data, d)}", f"{d} spread", f"{d} paper", f"{d} Δ ours", f"{d} Δ paper"]
    cells, first = [], data["rows"][0] if data["rows"] else None
    for row in data["rows"]:
        line = [row["label"], _fmt(row["params"] / 1e3 if row["params"] else None, ".1f"),
                _fmt(row["paper"].get("params_k"), ".1f")]
        for d in data["datasets"]:
            ours, paper = _ours(row, d), _paper(row, d)
            mean = statistics.fmean(ours) if ours else None
            ref_ours, ref_paper = _ours(first, d), _paper(first, d)
            line += [_fmt(mean), f"{max(ours) - min(ours):.2f} (n={len(ours)})" if len(ours) > 1 else f"n={len(ours)}",
                     _fmt(paper),
                     _fmt(mean - statistics.fmean(ref_ours) if ours and ref_ours else None, "+.2f"),
                     _fmt(paper - ref_paper if paper is not None and ref_paper is not None else None, "+.2f")]
        cells.append(line)
    return header, cells


def _evaluation_rows(data: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    header = ["method", "scale"] + [f"{d} ({'ours' if k == 0 else 'paper'})" for d in data["datasets"] for k in (0, 1)]
    cells = []
    for row in data["rows"]:
        line = [row["label"], f"x{row['scale']}"]
        for d in data["datasets"]:
            ours, paper = row["scores"].get(d), row["paper"].get(d)
            line += [f"{ours['psnr']:.2f} / {ours['ssim']:.4f}" if ours else "-",
                     f"{paper[0]:.2f} / {paper[1]:.4f}" if paper else "-"]
        cells.append(line)
    return header, cells


COLUMN_NAMES = {"params_k": "params K", "params_m": "params M", "flops_g": "FLOPs G", "memory_mb": "memory MiB",
                "time_s": "time s"}


def _complexity_rows(data: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Ours beside the paper per column; the paper's FLOPs beside our MACs where it counts multiply-accumulates."""
    header = ["method", "scale"] + [f"{COLUMN_NAMES[c]} ({who})" for c in data["columns"] for who in ("ours", "paper")]
    cells = []
    for row in data["rows"]:
        line, ours = [row["label"], f"x{row['scale']}"], row["ours"] or {}
        for c in data["columns"]:
            key, divisor = COMPLEXITY_COLUMNS[c]
            key = "macs" if key == "flops" and data["flops_are"] == "macs" else key
            value = ours.get(key)
            line += [_fmt(None if value is None else value / divisor, ".3g" if c == "time_s" else ",.2f"),
                     _fmt(row["paper"].get(c), ",.2f")]
        cells.append(line)
    return header, cells


def _complexity_notes(data: dict[str, Any]) -> list[str]:
    measured = sorted({f"{r['ours']['device']} ({r['ours']['memory_method']}; time: median of "
                       f"{len(r['ours']['runtimes_s'])} forwards)"
                       for r in data["rows"] if r["ours"] and "device" in r["ours"]})
    inputs = sorted({f"x{r['scale']}: {r['ours']['lr_hw'][0]}x{r['ours']['lr_hw'][1]}" for r in data["rows"]
                     if r["ours"]})
    macs = data["flops_are"] == "macs" and "flops_g" in data["columns"]
    lines = [f"* LR input (H x W) {', '.join(inputs)}; parameters and FLOPs counted on the meta device"
             + (" (the paper's FLOPs beside our multiply-accumulates)" if macs else "")]
    if measured:
        lines.append(f"* memory and time measured on {'; '.join(measured)}")
    return lines + [f"* not run yet: {r['label']} x{r['scale']}" for r in data["rows"] if not r["ours"]]


def render(data: dict[str, Any], fmt: str = "md") -> str:
    if fmt not in FORMATS:
        raise ConfigError(f"--format: one of {', '.join(FORMATS)}, not '{fmt}'")
    if fmt == "json":
        return json.dumps(data, indent=2) + "\n"
    header, cells = table_rows(data)
    if fmt == "csv":
        buf = io.StringIO()
        csv.writer(buf, lineterminator="\n").writerows([header, *cells])
        return buf.getvalue()
    if fmt == "tex":
        esc = lambda s: s.replace("_", r"\_").replace("%", r"\%").replace("Δ", r"$\Delta$")  # noqa: E731
        lines = [r"\begin{tabular}{" + "l" * 1 + "r" * (len(header) - 1) + "}", r"\hline",
                 " & ".join(map(esc, header)) + r" \\", r"\hline"]
        lines += [" & ".join(map(esc, c)) + r" \\" for c in cells] + [r"\hline", r"\end{tabular}"]
        return "\n".join(lines) + "\n"
    lines = [f"**{data['title']}**", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(c) + " |" for c in cells]
    if data["kind"] == "complexity":
        return "\n".join(lines + [""] + _complexity_notes(data)) + "\n"
    if data["kind"] == "evaluation":
        missing = [f"{r['label']} x{r['scale']}: {r['missing']}" for r in data["rows"] if r.get("missing")]
        missing += sorted({f"{d}: not scored ({why})" for r in data["rows"] for d, why in r.get("unscored", {}).items()})
        absent = [d for d in data["datasets"] if d not in data.get("present", [])]
        lines += [""] + [f"* {m}" for m in missing] + ([f"* not found under the data root: {', '.join(absent)}"]
                                                         if absent else [])
        return "\n".join(lines) + "\n"
    lines.append("")
    used = sorted({f"{d}: ours is the best validation score during training on {r['scores'][d]['set']}"
                   for row in data["rows"] for r in row["results"] for d in data["datasets"]
                   if r["scores"].get(d, {}).get("validation")})
    lines += [f"* {u}" for u in used]
    unscored = sorted({f"{d}: {why}" for row in data["rows"] for r in row["results"]
                       for d, why in r.get("unscored", {}).items()})
    lines += [f"* not scored: {u}" for u in unscored]
    for d, a in data["agreement"].items():
        if not a["variants"]:
            continue
        lines.append(f"* {d}: ordering vs the paper over {a['variants']} variants: Spearman rho "
                     f"{_fmt(a['spearman'])}; variant pairs agreeing beyond the seed spread "
                     f"{a['agree_beyond_noise']}, within it {a['agree_within_noise']}; disagreeing beyond "
                     f"{a['disagree_beyond_noise']}, within {a['disagree_within_noise']}"
                     + ("" if a["spread_known"] else " (one seed: spread unknown, every pair counted 'within')"))
    return "\n".join(lines) + "\n"


def chart(data: dict[str, Any]):
    """Ours vs the paper as differences from the first variant, per dataset (an ablation)."""
    labels = [r["label"] for r in data["rows"]]
    series: dict[str, list[float | None]] = {}
    for d in data["datasets"]:
        first_ours, first_paper = _ours(data["rows"][0], d), _paper(data["rows"][0], d)
        ours = [statistics.fmean(o) - statistics.fmean(first_ours) if (o := _ours(r, d)) and first_ours else None
                for r in data["rows"]]
        paper = [p - first_paper if (p := _paper(r, d)) is not None and first_paper is not None else None
                 for r in data["rows"]]
        series[f"{d} ours"], series[f"{d} paper"] = ours, paper
    return bar_chart(labels, series, title=f"{data['experiment']}: PSNR difference from '{labels[0]}'",
                     ylabel="dB", y_min=None, value_format="{:+.2f}")


def write_table(folder: str | os.PathLike, fmt: str = "md") -> tuple[str, list[Path]]:
    """Render the table, write every format (and the chart) beside the runs; return (text, files)."""
    folder = Path(folder)
    data = collect(folder)
    written = [atomic_write_text(folder / f"table.{f}", render(data, f), overwrite=True) for f in FORMATS]
    if data["kind"] == "ablation" and any(r["results"] for r in data["rows"]):
        written.append(save_png(chart(data), folder / "chart.png", overwrite=True))
    return render(data, fmt), written
