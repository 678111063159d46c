"""Could Θ's event slots be applied only where the context looks like the event they stored? (session 67)

    PYTHONPATH=. python docs/results/keyed_slots_s67.py OUT.json DATA:EPISODES [DATA:EPISODES ...]

A content-addressed memory would leave every other chunk to Φ (no interference, issue 15's +2% bound) if a slot's key,
the frames just after its event, picked out the reopen's context among the chunks that follow. On the real frames of
each drawer reopen: the key is the last frame of the chunk after the hiding chunk (the drawer shut over the cube, where
the `recall` rule's backward windows start); a later chunk's query is the last frame of its context. For two distances
(the mean absolute difference of 16x16 grey thumbnails, 0-255; the share of pixels whose largest channel moved by more
than 48 of 255, `rule.PIXEL_CHANGE`): how often the reopen's context is the nearest of the chunks after the key, and at
thresholds that gate the slot in at 50 / 75 / 90 / 100% of the reopens, the share of the episode's other later chunks
and of two other episodes' chunks that the gate would let in too. Frames only: no model is loaded.
"""

import json
import sys

import numpy as np

from experiments.reopen_oracle import hiding_chunk, last_hidden_frame, reopen_episodes
from worldmodel.memory import rule

NEW_FRAMES = 4  # the shipped model's chunk
QUANTILES = (0.5, 0.75, 0.9, 1.0)


def thumbnail(frame: np.ndarray) -> np.ndarray:
    grey = frame.astype(np.float32).mean(-1)
    size = grey.shape[0] // 16
    return grey.reshape(16, size, 16, size).mean((1, 3))


def thumbnail_distance(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(thumbnail(a) - thumbnail(b)).mean())


def pixel_distance(a: np.ndarray, b: np.ndarray) -> float:
    return float((np.abs(a.astype(np.int16) - b.astype(np.int16)).max(-1) > rule.PIXEL_CHANGE).mean())


def main(out: str, sources: list[str]) -> dict:
    episodes = []
    for source in sources:
        data, _, count = source.rpartition(":")
        episodes += [(e, hiding_chunk(e, NEW_FRAMES), last_hidden_frame(e) // NEW_FRAMES)
                     for e in reopen_episodes(data, int(count))]
    report = dict(command="PYTHONPATH=. python docs/results/keyed_slots_s67.py " + " ".join([out, *sources]),
                  reopens=len(episodes), distances={})
    for name, distance in (("thumbnail", thumbnail_distance), ("pixels", pixel_distance)):
        nearest, chance, at_reopen, own_later, others = 0, 0.0, [], [], []
        for i, (e, hide, reopen) in enumerate(episodes):
            key = e.frames[(hide + 2) * NEW_FRAMES]  # the last frame of chunk hide + 1
            later = {c: distance(key, e.frames[c * NEW_FRAMES]) for c in range(hide + 3, reopen + 1)}
            if reopen not in later:
                continue
            nearest += min(later.values()) == later[reopen]
            chance += 1 / len(later)  # the nearest picked at random among the candidates
            at_reopen.append(later[reopen])
            own_later += [d for c, d in later.items() if c != reopen]
            for j in (i + 1, i + 2):
                other = episodes[j % len(episodes)][0]
                others += [distance(key, other.frames[c * NEW_FRAMES])
                           for c in range(1, (len(other.frames) - 1) // NEW_FRAMES)]
        row = dict(reopens=len(at_reopen), reopen_nearest=int(nearest), by_chance=round(chance, 1), gates={})
        for q in QUANTILES:
            tau = float(np.quantile(at_reopen, q))
            row["gates"][f"{q:.2f}"] = dict(threshold=round(tau, 4),
                                           own_later_let_in=round(float(np.mean(np.array(own_later) <= tau)), 3),
                                           other_episodes_let_in=round(float(np.mean(np.array(others) <= tau)), 3))
            print(f"{name}: reopens let in {q:.0%} (<= {tau:.3f}): the episode's other later chunks "
                  f"{row['gates'][f'{q:.2f}']['own_later_let_in']:.0%}, other episodes' chunks "
                  f"{row['gates'][f'{q:.2f}']['other_episodes_let_in']:.0%}")
        print(f"{name}: the reopen's context the nearest in {nearest} of {len(at_reopen)} (by chance {chance:.1f})")
        report["distances"][name] = row
    with open(out, "w") as f:
        json.dump(report, f, indent=1)
    return report


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
