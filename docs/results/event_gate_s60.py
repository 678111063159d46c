"""How often does a causal pixel-change gate pick the chunk that hides the cube, and how many others? (session 60)

    python docs/results/event_gate_s60.py OUT.json DATA:EPISODES [DATA:EPISODES ...]

`reopen_oracle`'s ``change:`` probe writes around the chunks of most pixel change over the whole episode (not causal);
its ``event:`` probe writes around every chunk whose change exceeds a gate times the mean change of the chunks before
it (`reopen_oracle.event_chunks`, causal). For each gate this counts the reopens whose hiding chunk
(`reopen_oracle.hiding_chunk`) is an event, the events an episode (each one a write that may overwrite the hiding),
and the reopens whose first event is the hiding chunk; for the top-N gate of ``change:`` the same counts. Frames only:
no model is loaded.
"""

import json
import sys

from experiments.reopen_oracle import (event_chunks, hiding_chunk, last_hidden_frame, most_changed_chunks,
                                       reopen_episodes)

GATES = (1.1, 1.2, 1.3, 1.4, 1.5)
TOPS = (1, 2, 4)
NEW_FRAMES = 4  # the shipped model's chunk


def main(out: str, sources: list[str]) -> dict:
    episodes = []
    for source in sources:
        data, _, count = source.rpartition(":")
        episodes += [(data, e) for e in reopen_episodes(data, int(count))]
    rows = {}
    for gate in GATES:
        hit = first = events = 0
        for _, e in episodes:
            free, hide = last_hidden_frame(e) // NEW_FRAMES, hiding_chunk(e, NEW_FRAMES)
            chunks = event_chunks(e, free, NEW_FRAMES, gate)
            hit += hide in chunks
            first += bool(chunks) and chunks[0] == hide
            events += len(chunks)
        rows[f"event {gate}"] = dict(hiding_an_event=hit, first_event_the_hiding=first,
                                     events_per_episode=round(events / len(episodes), 2))
    for top in TOPS:
        hit = sum(hiding_chunk(e, NEW_FRAMES) in most_changed_chunks(e, last_hidden_frame(e) // NEW_FRAMES, NEW_FRAMES,
                                                                      top)
                  for _, e in episodes)
        rows[f"change top {top}"] = dict(hiding_an_event=hit, events_per_episode=top)
    report = dict(command="python docs/results/event_gate_s60.py " + " ".join([out, *sources]),
                  reopens=len(episodes), gates=rows)
    for name, row in rows.items():
        print(f"{name}: hiding chunk written in {row['hiding_an_event']} of {len(episodes)}, "
              f"{row['events_per_episode']} writes an episode"
              + (f", first write the hiding in {row['first_event_the_hiding']}" if "first_event_the_hiding" in row
                 else ""))
    with open(out, "w") as f:
        json.dump(report, f, indent=1)
    return report


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
