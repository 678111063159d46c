"""How often does the library's event gate (`TempLoRAConfig.write="events"`) pick the chunk that hides the cube, and
how many other chunks? (session 61)

    python docs/results/event_gate_s61.py OUT.json DATA:EPISODES [DATA:EPISODES ...]

Runs `worldmodel.memory.rule.event_sequences`, the memory's own gate, over the real frames of each drawer reopen up to
the reopen chunk (`experiments.reopen_oracle`: the chunks a teacher-forced memory sees before it), for the ratio gate
(``event_gate``, a chunk's change over the mean change before it) and the rank gate (``event_top``), and counts the
reopens whose hiding chunk (`reopen_oracle.hiding_chunk`) is an event and the events an episode (each a write, with
replay a write of every earlier event again). Frames only: no model is loaded.
"""

import json
import sys

import torch

from experiments.reopen_oracle import hiding_chunk, last_hidden_frame, reopen_episodes
from worldmodel.chunk import Chunk
from worldmodel.config import TempLoRAConfig
from worldmodel.memory import rule

GATES = {**{f"ratio {g}": dict(event_gate=g) for g in (1.1, 1.2, 1.3)},
         **{f"top {k}": dict(event_top=k) for k in (1, 2, 3)}}
NEW_FRAMES = 4  # the shipped model's chunk


def events(config: TempLoRAConfig, episode, chunks: int) -> list[int]:
    """The chunks among 0 .. chunks - 1 the gate calls events (each chunk's latents stand in as its index)."""
    log, found = rule.EventLog(), []
    for c in range(chunks):
        frames = torch.from_numpy(episode.frames[1 + NEW_FRAMES * c: 1 + NEW_FRAMES * (c + 1)])[None]
        rule.event_sequences(config, log, Chunk(frames, torch.full((1, 1, 2 * NEW_FRAMES, 1, 1), float(c)), NEW_FRAMES))
        if log.pending is not None and int(log.pending[0, 0, 0]) == c:
            found.append(c)
    return found


def main(out: str, sources: list[str]) -> dict:
    report = dict(command="python docs/results/event_gate_s61.py " + " ".join([out, *sources]), sources={})
    for source in sources:
        data, _, count = source.rpartition(":")
        episodes = reopen_episodes(data, int(count))
        rows = {}
        for name, gate in GATES.items():
            config = TempLoRAConfig(write="events", **gate)
            chosen = [events(config, e, last_hidden_frame(e) // NEW_FRAMES) for e in episodes]
            hit = sum(hiding_chunk(e, NEW_FRAMES) in c for e, c in zip(episodes, chosen))
            rows[name] = dict(hiding_an_event=hit, events_per_episode=round(sum(map(len, chosen)) / len(episodes), 2))
            print(f"{source} {name}: hiding chunk an event in {hit} of {len(episodes)}, "
                  f"{rows[name]['events_per_episode']} events an episode")
        report["sources"][source] = dict(reopens=len(episodes), gates=rows)
    with open(out, "w") as f:
        json.dump(report, f, indent=1)
    return report


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
