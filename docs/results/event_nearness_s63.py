"""Could Θ in per-event slots be applied by nearness, the slot whose event's frames lie nearest the frames before the
reopen? Frames only (session 63); no model is loaded.

    PYTHONPATH=. python docs/results/event_nearness_s63.py OUT.json DATA:EPISODES [DATA:EPISODES ...]

For each drawer reopen, the events of the ratio gate (1.3) and the rank gate (2) before the reopen chunk
(`experiments.reopen_oracle.event_chunks`), and per event the least pixel distance (L2 over 16x16 average-pooled
frames) between the last two frames before the reopen and the frames of the event's windows (its context, it and the
chunk after it, short of the reopen). Counts the reopens whose hiding chunk is an event and, of those, the ones where
the hiding is the nearest event.
"""

import json
import sys
from pathlib import Path

import numpy as np
import torch

from experiments.reopen_oracle import event_chunks, hiding_chunk, last_hidden_frame, reopen_episodes

NEW_FRAMES = 4  # the shipped model's chunk
CONTEXT = 4
GATES = {"ratio 1.3": dict(gate=1.3), "top 2": dict(gate=1.3, top=2)}


def pooled(frames: np.ndarray) -> torch.Tensor:
    """(T, H, W, 3) uint8 -> (T, H/4 * W/4 * 3) float: the frames at a quarter of their size."""
    return torch.nn.functional.avg_pool2d(torch.from_numpy(frames).float().permute(0, 3, 1, 2), 4).flatten(1)


def main(out: str, sources: list[str]) -> dict:
    report = dict(command="PYTHONPATH=. python docs/results/event_nearness_s63.py " + " ".join([out, *sources]),
                  sources={})
    for source in sources:
        data, _, count = source.rpartition(":")
        episodes = reopen_episodes(data, int(count))
        rows = {}
        for name, gate in GATES.items():
            written = nearest = 0
            for e in episodes:
                reopen, hide = last_hidden_frame(e) // NEW_FRAMES, hiding_chunk(e, NEW_FRAMES)
                events = event_chunks(e, reopen, NEW_FRAMES, **gate)
                if hide not in events:
                    continue
                frames, end = pooled(e.frames), 1 + reopen * NEW_FRAMES
                query = frames[end - 2: end]
                distance = [torch.cdist(query, frames[max(0, 1 + c * NEW_FRAMES - CONTEXT):
                                                      min(1 + (c + 2) * NEW_FRAMES, end)]).min().item() for c in events]
                written += 1
                nearest += events[int(np.argmin(distance))] == hide
            rows[name] = dict(hiding_an_event=written, hiding_the_nearest_event=nearest)
            print(f"{source} {name}: hiding an event in {written} of {len(episodes)}, the nearest of them in {nearest}")
        report["sources"][source] = dict(reopens=len(episodes), gates=rows)
    Path(out).write_text(json.dumps(report, indent=1))
    return report


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
