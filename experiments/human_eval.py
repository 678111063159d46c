"""Human evaluation study: raters score generated videos 0-1 for quality, coherence and action adherence.

    python -m experiments.evaluate --data data/scene_eval --save-videos --out runs/table2
    python -m experiments.human_eval import --from-evaluate runs/table2/videos --out runs/study/videos
    python -m experiments.human_eval serve --videos runs/study/videos --db runs/study/ratings.sqlite
    python -m experiments.human_eval report --db runs/study/ratings.sqlite --out runs/study

``import`` writes one mp4 per episode and variant plus ``manifest.json`` (file, model, action captions).
``serve`` shows one video at a time to each rater (model names hidden, videos known by random ids), the
least-rated first, so every video gets ``--min-ratings`` different raters before any gets more; ratings are
committed to SQLite before the page answers, so a restart with the same ``--db`` resumes the study. It binds to 127.0.0.1
unless ``--host`` says otherwise. ``report`` writes ``human_eval.md`` / ``.json`` / ``.png``: mean, 95% CI,
raters and Krippendorff's alpha per model and criterion. The code is in ``evaluation.human_study``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

DEFAULT_DB = "runs/human_eval/ratings.sqlite"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m experiments.human_eval", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="\n\n".join(__doc__.split("\n\n")[1:]))
    sub = p.add_subparsers(dest="command", required=True)

    imp = sub.add_parser("import", help="make a study folder (mp4s + manifest.json) from evaluate's saved videos")
    imp.add_argument("--from-evaluate", required=True, metavar="DIR",
                     help="OUT/videos of `experiments.evaluate --save-videos` (episode_*.npz, rollout.json)")
    imp.add_argument("--out", required=True, metavar="DIR", help="folder for the mp4s and manifest.json")
    imp.add_argument("--data", default=None,
                     help="episode data (h5 file or folder) for the captions; default: the one in rollout.json")
    imp.add_argument("--fps", type=int, default=4, help="frames per second of the mp4s (default 4)")
    imp.add_argument("--min-size", type=int, default=256,
                     help="upscale (nearest neighbour) to at least this many pixels on the long side")

    srv = sub.add_parser("serve", help="run the rating web app")
    srv.add_argument("--videos", required=True, metavar="DIR", help="folder with the mp4s and manifest.json")
    srv.add_argument("--db", default=DEFAULT_DB, help=f"SQLite study database (default {DEFAULT_DB})")
    srv.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    srv.add_argument("--port", type=int, default=8000, help="port (default 8000; 0 picks a free one)")
    srv.add_argument("--min-ratings", type=int, default=3, help="different raters per video (default 3)")

    rep = sub.add_parser("report", help="aggregate the ratings: markdown table, json and plot")
    rep.add_argument("--db", default=DEFAULT_DB, help=f"SQLite study database (default {DEFAULT_DB})")
    rep.add_argument("--out", default=None, metavar="DIR", help="output folder (default: the database's folder)")
    rep.add_argument("--min-ratings", type=int, default=3, help="flag videos with fewer raters (default 3)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> dict | None:
    args = parse_args(argv)
    if args.command == "import":
        from evaluation.human_study.videos import import_evaluate

        manifest = import_evaluate(args.from_evaluate, args.out, args.data, args.fps, args.min_size)
        for note in manifest["notes"]:
            print(f"note: {note}", file=sys.stderr)
        print(f"wrote {len(manifest['videos'])} videos and manifest.json to {args.out}", file=sys.stderr)
        return manifest
    if args.command == "serve":
        from evaluation.human_study.app import serve
        from evaluation.human_study.store import Store, StudyError
        from evaluation.human_study.videos import load_manifest

        entries = load_manifest(args.videos)
        store = Store(args.db, args.min_ratings)
        try:
            counts = store.sync_videos(entries)
        except StudyError as err:
            raise SystemExit(str(err)) from None
        progress = store.progress()

        def ready(url: str) -> None:
            print(f"human study: {progress['videos']} videos ({counts['new']} new), {progress['ratings']} ratings "
                  f"so far in {args.db}; raters open {url}", flush=True)

        serve(store, args.videos, args.host, args.port, on_ready=ready)
        return None
    from evaluation.human_study.report import write_report

    out = Path(args.out) if args.out else Path(args.db).parent
    result = write_report(args.db, out, args.min_ratings)
    print(result["markdown"])
    print(f"wrote {out / 'human_eval.md'}, {out / 'human_eval.json'}, {out / 'human_eval.png'}", file=sys.stderr)
    return result


if __name__ == "__main__":
    main()
