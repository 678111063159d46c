"""The chunk that hid the cube, played backwards, beside the reopen chunk: real frames (session 39, issue 15).

    PYTHONPATH=. python docs/results/hide_vs_reopen_sheet_s39.py DATA docs/hide_vs_reopen_s39.png

One row per memory episode (the first four of DATA): left, the 8 frames (context and new) of the chunk that hides the
cube (`experiments.reopen_oracle.hiding_chunk`) in reverse order, what the reverse fast rule trains Θ on; right, the 8
frames of the chunk that first shows the reopened drawer (the oracle's answer, `last_hidden_frame // 4`).
"""
import sys

import numpy as np
from PIL import Image

from experiments.reopen_oracle import hiding_chunk, last_hidden_frame, reopen_episodes

data, out = sys.argv[1], sys.argv[2]
episodes = reopen_episodes(data, 4)
rows = []
for e in episodes:
    tn = 4
    hide, reopen = hiding_chunk(e, tn), last_hidden_frame(e) // tn

    def sequence(c):
        return e.frames[np.clip(np.arange(1 + c * tn - tn, 1 + c * tn + tn), 0, len(e.frames) - 1)]

    gap = np.full((e.frames.shape[1], 8, 3), 255, np.uint8)
    rows.append(np.concatenate(list(sequence(hide)[::-1]) + [gap] + list(sequence(reopen)), 1))
    print(e.name, e.cube["color"], "hiding chunk", hide, "reopen chunk", reopen)
sheet = np.concatenate(rows, 0)
Image.fromarray(sheet).save(out)
