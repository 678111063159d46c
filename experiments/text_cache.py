"""Precompute the frozen text encoder's embeddings of an instruction vocabulary into one safetensors file.

    python -m experiments.text_cache --out runs/text_cache.safetensors

Training on a machine without the text model (the GPU machine has no MiniLM copy) then passes
`text_cache=...` to `experiments.train`; the model saves the cache with its weights.
"""

from __future__ import annotations

import argparse

from safetensors.torch import save_file

from envs import skill_vocabulary
from worldmodel.action import ActionEncoder
from worldmodel.config import from_preset


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="output .safetensors file")
    parser.add_argument("--vocab", nargs="+", default=["scene", "synthetic", "crafter"])
    parser.add_argument("--preset", default="small", help="preset whose text encoder and token count to use")
    args = parser.parse_args()
    encoder = ActionEncoder(from_preset(args.preset))
    texts = sorted({t for v in args.vocab for t in skill_vocabulary(v)})
    encoder.embed_texts(texts)
    save_file(encoder.text_cache, args.out)
    print(f"{len(texts)} instructions -> {args.out}")


if __name__ == "__main__":
    main()
