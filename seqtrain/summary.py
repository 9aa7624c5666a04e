"""`python -m seqtrain.summary <sweep dir>`: one row per job (its overrides, final and best dev scores),
sorted by the best score, printed as a table and written as `<sweep dir>/summary.csv`."""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import yaml

from seqtrain.errors import DataError
from seqtrain.lr_file import parse_learning_rates


def job_row(job_dir: Path, key: str | None) -> dict[str, str | float] | None:
    """Overrides and scores of one job, or None if it has no learning_rates file yet."""
    lr_file = job_dir / "learning_rates"
    if not lr_file.is_file():
        return None
    epochs = parse_learning_rates(lr_file.read_text(), str(lr_file))
    scored = {e: d.error for e, d in sorted(epochs.items()) if d.error}
    if not scored:
        return None
    overrides_file = job_dir / ".hydra" / "overrides.yaml"
    overrides = yaml.safe_load(overrides_file.read_text()) if overrides_file.is_file() else []
    last = max(scored)
    key = key or next((k for k in sorted(scored[last]) if k.startswith("dev_score")), sorted(scored[last])[0])
    best = min((e for e in scored if key in scored[e]), key=lambda e: scored[e][key])
    return {
        "job": job_dir.name,
        "overrides": " ".join(overrides),
        "epochs": last,
        "key": key,
        "final": scored[last].get(key, float("nan")),
        "best": scored[best][key],
        "best_epoch": best,
    }


def summarize(sweep_dir: Path, key: str | None = None) -> list[dict]:
    if not sweep_dir.is_dir():
        raise DataError(f"{sweep_dir}: no such sweep directory")
    rows = [r for d in sorted(sweep_dir.iterdir()) if d.is_dir() and (r := job_row(d, key)) is not None]
    return sorted(rows, key=lambda r: r["best"])


def format_table(rows: list[dict]) -> str:
    header = ["best", "best_epoch", "final", "epochs", "key", "overrides"]
    lines = [header] + [
        [
            f"{r['best']:.4f}",
            str(r["best_epoch"]),
            f"{r['final']:.4f}",
            str(r["epochs"]),
            r["key"],
            r["overrides"],
        ]
        for r in rows
    ]
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(line, widths)).rstrip() for line in lines)


def main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print("usage: python -m seqtrain.summary SWEEP_DIR [SCORE_KEY]")
        return 0 if argv else 2
    sweep_dir = Path(argv[0])
    try:
        rows = summarize(sweep_dir, argv[1] if len(argv) > 1 else None)
    except DataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if not rows:
        print(f"error: {sweep_dir}: no job with scores (learning_rates) found", file=sys.stderr)
        return 2
    print(format_table(rows))
    with open(sweep_dir / "summary.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    print(f"written: {sweep_dir / 'summary.csv'}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
