"""Which change measure lets the rank gate (`TempLoRAConfig.event_top` 2) write the chunk that hides the cube, with the
fewest events after it? (session 65)

    PYTHONPATH=. python docs/results/event_change_s65.py OUT.json DATA:EPISODES [DATA:EPISODES ...]

On the real frames of each drawer reopen up to the reopen chunk (as `event_gate_s61.py`), for the library's two
measures (`rule.chunk_change`: "mean", the mean absolute pixel difference; "pixels", the share of pixels whose largest
channel moved by more than `rule.PIXEL_CHANGE`, through `reopen_oracle.event_chunks`) and the thresholds scanned to
choose it (the same share at 24 ... 128): the reopens whose hiding chunk is an event, the events an episode, and the
reopens whose hiding is written with two or more events after it (most of the `recall` rule's misses in session 64).
Frames only: no model is loaded.
"""

import json
import sys

import numpy as np

from experiments.reopen_oracle import event_chunks, hiding_chunk, last_hidden_frame, reopen_episodes
from worldmodel.memory import rule

NEW_FRAMES = 4  # the shipped model's chunk
TOP = 2
THRESHOLDS = (24, 32, 48, 64, 96, 128)


def share_changed(episode, chunk: int, threshold: int) -> float:
    start = 1 + chunk * NEW_FRAMES
    frames = episode.frames.astype(np.int16)
    diff = np.abs(frames[start: start + NEW_FRAMES] - frames[start - 1]).max(-1)
    return float((diff > threshold).mean())


def tally(rows: dict, name: str, hiding: int, events: list[int]) -> None:
    row = rows.setdefault(name, dict(hiding_an_event=0, events=0, two_or_more_after=0, reopens=0))
    row["reopens"] += 1
    row["events"] += len(events)
    if hiding in events:
        row["hiding_an_event"] += 1
        row["two_or_more_after"] += sum(c > hiding for c in events) >= 2


def main(out: str, sources: list[str]) -> dict:
    report = dict(command="PYTHONPATH=. python docs/results/event_change_s65.py " + " ".join([out, *sources]),
                  top=TOP, sources={})
    for source in sources:
        data, _, count = source.rpartition(":")
        rows: dict = {}
        for e in reopen_episodes(data, int(count)):
            free, hiding = last_hidden_frame(e) // NEW_FRAMES, hiding_chunk(e, NEW_FRAMES)
            for measure in ("mean", "pixels"):
                tally(rows, measure, hiding, event_chunks(e, free, NEW_FRAMES, 1.3, TOP, measure))
            for t in THRESHOLDS:
                change = [share_changed(e, c, t) for c in range(1, free)]
                tally(rows, f"share > {t}", hiding, [c for c in range(3, free)
                                                     if rule.is_event(change[: c - 1], change[c - 1], 1.3, TOP)])
        for name, row in rows.items():
            row["events_per_episode"] = round(row.pop("events") / row["reopens"], 2)
            print(f"{source} {name}: hiding an event in {row['hiding_an_event']} of {row['reopens']}, "
                  f"{row['events_per_episode']} events an episode, two or more after it in {row['two_or_more_after']}")
        report["sources"][source] = rows
    with open(out, "w") as f:
        json.dump(report, f, indent=1)
    return report


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
