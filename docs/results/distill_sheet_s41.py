"""The free rollouts of `experiments.evaluate --mode free --sheet` runs stacked: the real video once, then each run's
generated row under its label (session 41, issue 16: the sampler at 1, 2 and 8 denoising passes, distilled or not).

    PYTHONPATH=. python docs/results/distill_sheet_s41.py OUT.png "LABEL=RUN_DIR" ["LABEL=RUN_DIR" ...]

Each RUN_DIR's table2_sheet.png holds the real video's row above the run's one variant (`--variants no_temp_lora`),
on the same episode and frames (`--video-episode`, default 0).
"""
import sys

import numpy as np
from PIL import Image, ImageDraw

out, runs = sys.argv[1], [a.split("=", 1) for a in sys.argv[2:]]
rows = []
for i, (label, run) in enumerate(runs):
    sheet = np.asarray(Image.open(f"{run}/table2_sheet.png").convert("RGB"))
    half = sheet.shape[0] // 2
    parts = ([("real", sheet[:half])] if i == 0 else []) + [(label, sheet[half:])]
    for name, row in parts:
        strip = Image.new("RGB", (150, row.shape[0]), (255, 255, 255))
        ImageDraw.Draw(strip).multiline_text((4, 4), name.replace(", ", "\n"), fill=(0, 0, 0))
        rows.append(np.concatenate([np.asarray(strip), row], axis=1))
Image.fromarray(np.concatenate(rows, axis=0)).save(out)
print(out, Image.open(out).size)
