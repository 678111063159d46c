"""The study's report: per model and criterion the mean score, its 95% confidence interval, the number of
raters, videos and ratings, and Krippendorff's alpha (interval metric) as inter-rater agreement; written
as ``human_eval.json``, ``human_eval.md`` (a markdown table) and ``human_eval.png`` (a bar plot).

Each video weighs the same: a video's score is the mean of its raters' scores, a model's score the mean
over its videos, and the CI is Student's t interval over those per-video means (none for one video).
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from evaluation.human_study.store import CRITERIA, Store


def krippendorff_alpha_interval(units: Iterable[Sequence[float]]) -> float:
    """Krippendorff's alpha for interval data. ``units``: for each rated unit (video), the values its coders
    (raters) gave, missing values left out. Units with fewer than two values are not pairable and are
    ignored. With n pairable values,

        D_o = 1/n * sum_u 1/(m_u - 1) * sum_{i != j in u} (v_i - v_j)^2
        D_e = 1/(n (n - 1)) * sum_{i != j} (v_i - v_j)^2,          alpha = 1 - D_o / D_e.

    NaN when it is undefined (fewer than two pairable values, or no variation at all)."""
    pairable = [np.asarray(u, dtype=float) for u in units if len(u) >= 2]
    n = sum(len(u) for u in pairable)
    if n < 2:
        return math.nan
    # sum over ordered pairs i != j of (v_i - v_j)^2 = 2 m sum (v - mean)^2
    d_o = sum(2 * len(u) * np.sum((u - u.mean()) ** 2) / (len(u) - 1) for u in pairable) / n
    values = np.concatenate(pairable)
    d_e = 2 * n * np.sum((values - values.mean()) ** 2) / (n * (n - 1))
    if d_e <= 1e-15:
        return math.nan
    return float(1.0 - d_o / d_e)


def mean_ci95(values: Sequence[float]) -> tuple[float, float | None]:
    """Mean and the half-width of its 95% Student t interval (None for fewer than two values)."""
    x = np.asarray(values, dtype=float)
    if len(x) == 0:
        return math.nan, None
    if len(x) < 2:
        return float(x.mean()), None
    from scipy.stats import t

    return float(x.mean()), float(t.ppf(0.975, len(x) - 1) * x.std(ddof=1) / math.sqrt(len(x)))


def summarize(ratings: list[dict], min_ratings: int = 3) -> dict:
    """Per model and criterion statistics from ``Store.ratings()`` rows."""
    by_model: dict[str, list[dict]] = defaultdict(list)
    for r in ratings:
        by_model[r["model"]].append(r)
    models: dict[str, dict] = {}
    for model in sorted(by_model):
        rows = by_model[model]
        per_video: dict[str, list[dict]] = defaultdict(list)
        for r in rows:
            per_video[r["video"]].append(r)
        stats = {"videos": len(per_video), "ratings": len(rows), "raters": len({r["rater"] for r in rows}),
                 "videos_below_min": sum(len(v) < min_ratings for v in per_video.values())}
        for k in CRITERIA:
            mean, half = mean_ci95([float(np.mean([r[k] for r in v])) for v in per_video.values()])
            alpha = krippendorff_alpha_interval([[r[k] for r in v] for v in per_video.values()])
            stats[k] = {"mean": mean, "ci95": half,
                        "ci95_interval": None if half is None else [mean - half, mean + half],
                        "alpha": None if math.isnan(alpha) else alpha}
        models[model] = stats
    per_video_all: dict[str, list[dict]] = defaultdict(list)
    for r in ratings:
        per_video_all[r["video"]].append(r)
    overall = {}
    for k in CRITERIA:
        a = krippendorff_alpha_interval([[r[k] for r in v] for v in per_video_all.values()])
        overall[k] = None if math.isnan(a) else a
    return {"models": models, "alpha_all_videos": overall, "raters": len({r["rater"] for r in ratings}),
            "ratings": len(ratings), "videos": len(per_video_all), "min_ratings": min_ratings}


def _f(x: float | None, digits: int = 3) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def markdown(summary: dict) -> str:
    lines = ["# Human evaluation", "",
             f"{summary['ratings']} ratings of {summary['videos']} videos by {summary['raters']} raters; scores "
             "from 0 to 1. Mean over videos of each video's mean rating, with the 95% t interval over videos; "
             "agreement is Krippendorff's alpha (interval) over the model's videos.", "",
             "| Model | Criterion | Mean | 95% CI | Raters | Videos | Ratings | Krippendorff's alpha |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for model, s in summary["models"].items():
        for k in CRITERIA:
            c = s[k]
            ci = "n/a" if c["ci95"] is None else f"± {_f(c['ci95'])} [{_f(c['ci95_interval'][0])}, {_f(c['ci95_interval'][1])}]"
            lines.append(f"| {model} | {k} | {_f(c['mean'])} | {ci} | {s['raters']} | {s['videos']} | "
                         f"{s['ratings']} | {_f(c['alpha'])} |")
    lines += ["", "Krippendorff's alpha over all videos: "
              + ", ".join(f"{k} {_f(a)}" for k, a in summary["alpha_all_videos"].items()) + "."]
    below = {m: s["videos_below_min"] for m, s in summary["models"].items() if s["videos_below_min"]}
    if below:
        lines.append("")
        lines.append(f"Not yet at {summary['min_ratings']} raters: "
                     + ", ".join(f"{n} video(s) of {m}" for m, n in below.items()) + ".")
    return "\n".join(lines) + "\n"


def plot(summary: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = list(summary["models"])
    width = 0.8 / max(1, len(models))
    fig, ax = plt.subplots(figsize=(max(5.0, 1.2 * len(models) * len(CRITERIA)), 3.6))
    x = np.arange(len(CRITERIA))
    for i, m in enumerate(models):
        s = summary["models"][m]
        means = [s[k]["mean"] for k in CRITERIA]
        errs = [s[k]["ci95"] or 0.0 for k in CRITERIA]
        ax.bar(x + (i - (len(models) - 1) / 2) * width, means, width, yerr=errs, capsize=3, label=m)
    ax.set_xticks(x, list(CRITERIA))
    ax.set_ylim(0, 1)
    ax.set_ylabel("mean rating (95% CI)")
    ax.set_title(f"Human evaluation: {summary['raters']} raters, {summary['videos']} videos")
    ax.legend(fontsize=8, loc="upper right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_report(db: str | Path, out: str | Path, min_ratings: int = 3) -> dict:
    """Summarize the study database ``db`` into ``out``/human_eval.{json,md,png}; returns the summary."""
    db, out = Path(db), Path(out)
    if not db.is_file():
        raise SystemExit(f"no study database at {str(db)!r} (pass the --db the server used)")
    ratings = Store(db, min_ratings).ratings()
    if not ratings:
        raise SystemExit(f"{str(db)!r} holds no ratings yet")
    summary = summarize(ratings, min_ratings)
    summary["date"] = datetime.now(timezone.utc).strftime("%Y-%m-%d")
    out.mkdir(parents=True, exist_ok=True)
    (out / "human_eval.json").write_text(json.dumps(summary, indent=1))
    table = markdown(summary)
    (out / "human_eval.md").write_text(table)
    plot(summary, out / "human_eval.png")
    return {**summary, "markdown": table}
