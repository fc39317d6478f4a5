"""Render the benchmark history in bench-results/ as a markdown table and a PNG chart
(runs with scores; memory-mode runs print their own table)."""

from __future__ import annotations

import json
from pathlib import Path

RESULTS = Path(__file__).resolve().parents[1] / "bench-results"
CHART = RESULTS / "history.png"


def load_rows() -> list[dict]:
    rows = []
    for path in sorted(RESULTS.glob("*.json")):
        record = json.loads(path.read_text())
        for row in record["rows"]:
            rows.append({"stamp": record["stamp"], "mode": record["mode"], "quick": record["quick"], **row})
    return [row for row in rows if "analogy" in row]  # memory-mode rows have no scores


def label(row: dict) -> str:
    return f"{row['system']} e{row['epochs']} s{row['shards']}{' quick' if row['quick'] else ''}"


def main() -> None:
    rows = load_rows()
    if not rows:
        raise SystemExit(f"bench-report: no results in {RESULTS}; run make bench first")
    print("| run | mode | setting | words/s | analogy | WS353 |\n|---|---|---|---|---|---|")
    for row in rows:
        print(f"| {row['stamp']} | {row['mode']} | {label(row)} | {row['words_per_s']:,.0f} | "
              f"{row['analogy']:.1%} | {row['ws353']:.3f} |")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [f"{row['stamp'][4:13]}\n{label(row)}" for row in rows]
    figure, (speed, quality) = plt.subplots(2, 1, figsize=(max(8, len(rows) * 0.9), 8), sharex=True)
    speed.bar(labels, [row["words_per_s"] for row in rows], color="tab:blue")
    speed.set_ylabel("training words/s")
    quality.bar(labels, [100 * row["analogy"] for row in rows], color="tab:green")
    quality.set_ylabel("analogy accuracy, top 30k (%)")
    quality.tick_params(axis="x", labelrotation=90, labelsize=7)
    figure.tight_layout()
    figure.savefig(CHART, dpi=100)
    print(f"\nchart: {CHART}")


if __name__ == "__main__":
    main()
