"""Imagined outcome agreement of two settings on the same rollouts, paired (session 42).

    python docs/results/outcome_paired_s42.py A1.json,A2.json,... B1.json,B2.json,...

Each file is an `experiments.evaluate outcome` result; a rollout is keyed by (task, seed, kind), and judged
right when the heads' verdict on its imagined last chunk equals the real outcome. Prints each side's count,
the rollouts judged right by one side alone, and the exact two-sided sign test of those discordant pairs.
"""

import json
import sys
from math import comb


def verdicts(paths: str) -> dict:
    out = {}
    for path in paths.split(","):
        for ep in json.load(open(path))["episodes"]:
            out[(ep["task"], ep["seed"], ep["kind"])] = (ep["done_imagined"] == ep["real_success"], ep["real_success"])
    return out


def main() -> None:
    a, b = verdicts(sys.argv[1]), verdicts(sys.argv[2])
    if a.keys() != b.keys():
        raise SystemExit(f"the two sides judge different rollouts: {sorted(a.keys() ^ b.keys())[:5]} ...")
    if any(a[k][1] != b[k][1] for k in a):
        raise SystemExit("the same rollout has different real outcomes on the two sides: not the same real episodes")
    a, b = {k: v[0] for k, v in a.items()}, {k: v[0] for k, v in b.items()}
    only_a = sorted(k for k in a if a[k] and not b[k])
    only_b = sorted(k for k in a if b[k] and not a[k])
    n, k = len(only_a) + len(only_b), min(len(only_a), len(only_b))
    p = min(1.0, 2 * sum(comb(n, i) for i in range(k + 1)) / 2**n) if n else 1.0
    print(f"A right {sum(a.values())} / {len(a)}, B right {sum(b.values())} / {len(b)}")
    print(f"right with A alone ({len(only_a)}): {only_a}")
    print(f"right with B alone ({len(only_b)}): {only_b}")
    print(f"exact two-sided sign test of {len(only_a)} against {len(only_b)}: p = {p:.3f}")


if __name__ == "__main__":
    main()
