"""The drawer reopen as `experiments.evaluate --mode recall --save-videos` generated it under each fast rule, beside
the real one (session 40, issue 15).

    PYTHONPATH=. python docs/results/recall_sheet_s40.py DATA OUT.png RUN_DIR [RUN_DIR ...]

Per scoreable episode of DATA that every run generated, a row per run (the real video first) of the episode's last
8 frames (or 8 from the frame after the cube's last hidden frame, where more follow it): the drawer reopening onto the
cube, which ends most episodes. Prints each episode's name, the
cube's true colour and what the probe read in each run's reopen (its table2.json).
"""
import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from experiments.reopen_oracle import last_hidden_frame, reopen_episodes

data, out, runs = sys.argv[1], sys.argv[2], [Path(r) for r in sys.argv[3:]]
videos, seen = [], []
for run in runs:
    by_name = {}
    for path in sorted((run / "videos").glob("episode_*.npz")):
        with np.load(path) as f:
            (key,) = [k for k in f.files if k.startswith("video_")]
            by_name[str(f["name"])] = f[key]
    videos.append(by_name)
    table = json.loads((run / "table2.json").read_text())
    seen.append({e["episode"]: e["cube_seen"] for e in table["per_episode"]})
rows = []
for e in reopen_episodes(data, 10**6):
    if not all(e.name in v for v in videos):
        continue
    start = max(0, min(last_hidden_frame(e) + 1, len(e.frames) - 8))
    for v in [e.frames] + [v[e.name] for v in videos]:
        frames = v[start: start + 8]
        frames = np.concatenate([frames, np.zeros((8 - len(frames), *frames.shape[1:]), np.uint8)])
        rows.append(np.concatenate(list(frames), 1))
    rows.append(np.full((4, rows[-1].shape[1], 3), 255, np.uint8))
    print(e.name, e.cube["color"], "read:", ", ".join(f"{r.name} {s[e.name]}" for r, s in zip(runs, seen)))
Image.fromarray(np.concatenate(rows, 0)).save(out)
