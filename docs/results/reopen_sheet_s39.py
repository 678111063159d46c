"""The reopen as generated under each reopen_oracle setting, beside the real one (session 39, issue 15).

    PYTHONPATH=. python docs/results/reopen_sheet_s39.py DATA OUT.png EPISODES SETTING [SETTING ...]

Rolls the first EPISODES memory episodes of DATA as `experiments.reopen_oracle` does (everything before the reopen chunk
real, the rest generated with the model's denoising steps) and draws, per episode, a row per setting (the real video
first) of the frames from the reopen chunk's first new frame on, 8 of them.
"""
import sys

import numpy as np
import torch
from PIL import Image

from experiments.reopen_oracle import last_hidden_frame, parse_setting, reopen_episodes, roll
from worldmodel.loading import load_model

data, out, count, settings = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4:]
torch.set_num_threads(2)
model, _ = load_model("default", device="cpu")
model.eval()
tn = model.config.new_frames
episodes = reopen_episodes(data, count)
free_from = [last_hidden_frame(e) // tn for e in episodes]
videos = [[e.frames for e in episodes]] + [roll(model, episodes, free_from, *parse_setting(s), 4, 0) for s in settings]
rows = []
for k, e in enumerate(episodes):
    start = 1 + free_from[k] * tn
    for v in videos:
        frames = v[k][start : start + 8]
        frames = np.concatenate([frames, np.zeros((8 - len(frames), *frames.shape[1:]), np.uint8)])
        rows.append(np.concatenate(list(frames), 1))
    rows.append(np.full((4, rows[-1].shape[1], 3), 255, np.uint8))
    print(e.name, e.cube["color"], "rows: real,", ", ".join(settings))
sheet = np.concatenate(rows, 0)
Image.fromarray(sheet).save(out)
