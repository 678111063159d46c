"""Two `experiments.evaluate` runs on the same memory episodes, paired per episode (session 42).

    python docs/results/recall_paired_s42.py A/table2.json:VARIANT B/table2.json:VARIANT

Prints each side's cube recall at the reopen, the episodes recalled by one side alone with the exact two-sided sign
test of those, and the mean per-episode difference of dynamic PSNR (B - A) with how many episodes B is better in.
"""

import json
import sys
from math import comb


def rows(spec: str) -> dict:
    path, variant = spec.rsplit(":", 1)
    found = {r["episode"]: r for r in json.load(open(path))["per_episode"] if r["variant"] == variant}
    if not found:
        raise SystemExit(f"{path} has no episodes of variant {variant!r}")
    return found


def recalled(row: dict) -> bool:
    """An episode's recall: 1.0 or 0.0; "nan" (an episode without a reopen) is neither (session 46: bool("nan") had
    counted it as recalled)."""
    return row["cube_recall"] == 1.0


def main() -> None:
    a, b = rows(sys.argv[1]), rows(sys.argv[2])
    if a.keys() != b.keys():
        raise SystemExit("the two runs hold different episodes")
    scored = [e for e in a if a[e]["cube_recall"] != "nan"]  # episodes with a reopen
    only_a = [e for e in a if recalled(a[e]) and not recalled(b[e])]
    only_b = [e for e in a if recalled(b[e]) and not recalled(a[e])]
    n, k = len(only_a) + len(only_b), min(len(only_a), len(only_b))
    p = min(1.0, 2 * sum(comb(n, i) for i in range(k + 1)) / 2**n) if n else 1.0
    diff = [b[e]["psnr_dynamic"] - a[e]["psnr_dynamic"] for e in a]
    print(f"recall A {sum(recalled(r) for r in a.values())} / {len(scored)}, "
          f"B {sum(recalled(r) for r in b.values())} / {len(scored)}; "
          f"A alone {len(only_a)}, B alone {len(only_b)}: sign test p = {p:.3f}")
    print(f"dynamic PSNR, B - A: {sum(diff) / len(diff):+.2f} dB (B better in {sum(d > 0 for d in diff)} / {len(diff)})")


if __name__ == "__main__":
    main()
