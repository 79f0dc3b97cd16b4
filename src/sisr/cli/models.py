"""sisr models: the registry as a table."""

from __future__ import annotations

import argparse
import json


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--variants", action="store_true",
                        help="also list each entry's variants, as rows named NAME:VARIANT (usable wherever a "
                             "model name is)")


def run(args: argparse.Namespace) -> int:
    from ..models import model_infos
    from ..weights.pretrained import available_pretrained

    shipped: dict[str, list[int]] = {}
    for name, scale, _ in available_pretrained():
        shipped.setdefault(name, []).append(scale)
    rows = []
    for info in model_infos(variants=args.variants):
        rows.append({
            "name": info.name,
            "scales": list(info.scales),
            "pretrained": shipped.get(info.name, []),
            "tiling": info.capabilities.tiling,
            "precisions": list(info.capabilities.precisions),
            "train_precisions": list(info.capabilities.train_precisions),
            "code": info.reference.code or "built from the paper",
            "variants": {name: dict(hparams) for name, hparams in info.variants.items()},
            "title": info.title,
        })
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    header = ("name", "scales", "pretrained", "tiling", "precisions", "variants", "title")
    table = [header] + [(r["name"], ",".join(map(str, r["scales"])), ",".join(map(str, r["pretrained"])) or "-",
                         r["tiling"], ",".join(r["precisions"]), ",".join(r["variants"]) or "-", r["title"])
                        for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    for row in table:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
    return 0
