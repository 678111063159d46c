"""Plots for docs/RESULTS.md from the measured result files in docs/results/.

    python -m experiments.plot_results                      # docs/results/*.json|csv -> docs/*.png

- ``table2.png``: PSNR on all generated frames and on revisiting frames for every Table 2 variant
  (``*_table2.json`` / ``*_teacher.json`` written by ``experiments.evaluate``), with the copy baseline.
- ``training_curves.png``: the logged losses of ``train_*.csv`` (``<phase>_log.csv`` of ``experiments.train``).
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def plot_table2(results: Path, out: Path) -> Path:
    runs = sorted(results.glob("*_table2.json")) + sorted(results.glob("*_teacher.json"))
    fig, axes = plt.subplots(1, len(runs), figsize=(4.2 * len(runs), 3.6), squeeze=False)
    for ax, path in zip(axes[0], runs):
        data = json.loads(path.read_text())
        rows = {r["label"]: r["metrics"] for r in data["variants"].values() if "metrics" in r}
        rows["copy last given frame"] = data["copy_last_frame"]
        labels = list(rows)
        for k, (key, name) in enumerate((("psnr", "all frames"), ("psnr_revisit", "revisit frames"))):
            means = [float(rows[label][key]["mean"]) for label in labels]
            stds = [float(rows[label][key]["std"]) for label in labels]
            ax.bar([i + 0.4 * k for i in range(len(labels))], means, 0.4, yerr=stds, label=name, capsize=2)
        ax.set_xticks([i + 0.2 for i in range(len(labels))], [label.replace(" (full)", "") for label in labels],
                      rotation=35, ha="right", fontsize=7)
        ax.set_ylabel("PSNR (dB)")
        ax.set_title(f"{path.stem} ({data['num_episodes']} episodes, {data['settings']['mode']})", fontsize=8)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "table2.png", dpi=110)
    plt.close(fig)
    return out / "table2.png"


def plot_training(results: Path, out: Path) -> Path:
    fig, ax = plt.subplots(figsize=(6, 3.6))
    for path in sorted(results.glob("train_*.csv")):
        with path.open() as f:
            rows = list(csv.DictReader(f))
        ax.plot([int(r["step"]) for r in rows], [float(r["loss"]) for r in rows], label=path.stem[6:])
    ax.set_xlabel("step (this run)")
    ax.set_ylabel("logged loss")
    ax.set_yscale("log")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "training_curves.png", dpi=110)
    plt.close(fig)
    return out / "training_curves.png"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results", default="docs/results", help="folder of measured result files")
    parser.add_argument("--out", default="docs", help="folder for the PNGs")
    args = parser.parse_args()
    results, out = Path(args.results), Path(args.out)
    if not results.is_dir():
        raise SystemExit(f"no results folder {results}")
    for path in (plot_table2(results, out), plot_training(results, out)):
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
