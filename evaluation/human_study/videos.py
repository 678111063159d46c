"""The study's videos: a folder of mp4s with a ``manifest.json``, and the importer that makes one from
the generated videos ``experiments.evaluate --save-videos`` wrote.

``manifest.json``::

    {"videos": [{"file": "episode_00000_full.mp4", "model": "full", "episode": "scene.h5:episode_0000000",
                 "captions": ["open the drawer", "pick up the cube", ...]}, ...],
     "notes": ["..."]}

``file`` is relative to the folder; ``model`` is the model or variant (kept from the raters); ``captions``
are the action prompts in order (one per chunk); ``episode`` is optional. A bare list of entries works too.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

MANIFEST = "manifest.json"
_VARIANT_KEY = re.compile(r"^video_(.+)$")


def load_manifest(folder: str | Path) -> list[dict[str, Any]]:
    """The manifest's entries, checked: every file exists inside the folder, every entry has a model."""
    folder = Path(folder)
    path = folder / MANIFEST
    if not folder.is_dir():
        raise SystemExit(f"--videos {str(folder)!r} is not a folder")
    if not path.is_file():
        raise SystemExit(f"no {MANIFEST} in {str(folder)!r}: list the videos there (file, model, captions), or make "
                         "the folder from evaluate's videos with `python -m experiments.human_eval import`")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise SystemExit(f"{path}: not valid JSON ({err})") from None
    entries = data["videos"] if isinstance(data, dict) and "videos" in data else data
    if not isinstance(entries, list) or not entries:
        raise SystemExit(f"{path}: expected a non-empty list of videos (or {{\"videos\": [...]}})")
    seen: set[str] = set()
    out = []
    root = folder.resolve()
    for i, e in enumerate(entries):
        where = f"{path}: video {i}"
        if not isinstance(e, dict) or not e.get("file") or not e.get("model"):
            raise SystemExit(f"{where}: every entry needs 'file' and 'model'")
        file = str(e["file"])
        full = (folder / file).resolve()
        if root not in full.parents:
            raise SystemExit(f"{where}: {file!r} is outside the videos folder")
        if not full.is_file():
            raise SystemExit(f"{where}: no such file {file!r}")
        if file in seen:
            raise SystemExit(f"{where}: {file!r} is listed twice")
        seen.add(file)
        captions = e.get("captions", [])
        if isinstance(captions, str):
            captions = [captions]
        if not isinstance(captions, list):
            raise SystemExit(f"{where}: 'captions' must be a list of strings")
        out.append({"file": file, "model": str(e["model"]), "episode": str(e.get("episode", "")),
                    "captions": [str(c) for c in captions]})
    return out


# --------------------------------------------------------------------------------------------- import
def _episode_captions(name: str, data: str | None, cache: dict) -> list[str] | None:
    """The per-chunk language instructions of episode ``name`` ("file.h5:key", as evaluate names them)
    from the h5 episode data at ``data`` (a file or a folder of them); None if they cannot be found."""
    if data is None or ":" not in name:
        return None
    file, key = name.rsplit(":", 1)
    src = Path(data)
    path = src / file if src.is_dir() else src
    if path.name != file or not path.is_file():
        return None
    import h5py

    if str(path) not in cache:
        cache[str(path)] = h5py.File(path, "r")
    f = cache[str(path)]
    if key not in f or "language" not in f[key]:
        return None
    return [s.decode("utf-8") if isinstance(s, bytes) else str(s) for s in f[key]["language"][()]]


def write_mp4(path: Path, video, fps: int, scale: int) -> None:
    """uint8 (T, H, W, 3) -> H.264 mp4 that browsers play, nearest-neighbour upscaled by ``scale``. Sizes are
    padded to even numbers: only then does moviepy's libx264 output use 4:2:0 chroma (yuv420p)."""
    import numpy as np
    from moviepy import ImageSequenceClip

    video = np.asarray(video, np.uint8)
    if video.ndim != 4 or video.shape[-1] != 3:
        raise ValueError(f"expected a (T, H, W, 3) video, got shape {video.shape}")
    if scale > 1:
        video = video.repeat(scale, axis=1).repeat(scale, axis=2)
    video = np.pad(video, ((0, 0), (0, video.shape[1] % 2), (0, video.shape[2] % 2), (0, 0)))
    ImageSequenceClip(list(video), fps=fps).write_videofile(
        str(path), codec="libx264", audio=False, logger=None)


def import_evaluate(src: str | Path, out: str | Path, data: str | None = None, fps: int = 4,
                    min_size: int = 256) -> dict:
    """Turn ``OUT/videos`` of ``experiments.evaluate --save-videos`` (``episode_XXXXX.npz`` with ``name`` and
    ``video_<variant>``, plus ``rollout.json``) into one mp4 per episode and variant in ``out`` and a
    ``manifest.json``. Captions are the episode's per-chunk language instructions, read from the episode
    data the rollout used (``rollout.json`` settings, or ``data``); where that cannot be read they are
    left empty and the manifest's notes say so. Returns the manifest."""
    import numpy as np

    src, out = Path(src), Path(out)
    files = sorted(src.glob("episode_*.npz"))
    if not files:
        raise SystemExit(f"no episode_*.npz in {str(src)!r} (write them with `python -m experiments.evaluate "
                         "--save-videos --out OUT`, then import OUT/videos)")
    meta_file = src / "rollout.json"
    meta = json.loads(meta_file.read_text()) if meta_file.is_file() else {}
    settings = meta.get("settings", {})
    notes: list[str] = []
    if data is None:
        data = settings.get("data")
        if data is not None and str(data).startswith("synthetic"):
            notes.append("synthetic episodes: they have no language captions")
            data = None
        elif data is None:
            notes.append(f"no rollout.json episode data in {src.name}: captions are empty (give --data)")
    if data is not None and not Path(data).exists():
        notes.append(f"episode data {data!r} not found here: captions are empty (give --data)")
        data = None
    out.mkdir(parents=True, exist_ok=True)
    entries, cache, uncaptioned = [], {}, 0
    try:
        for npz in files:
            with np.load(npz) as f:
                name = str(f["name"]) if "name" in f else npz.stem
                variants = [m.group(1) for k in f.files if (m := _VARIANT_KEY.match(k))]
                captions = _episode_captions(name, data, cache)
                if captions is None:
                    uncaptioned += 1
                for v in variants:
                    video = f[f"video_{v}"]
                    scale = max(1, -(-min_size // max(video.shape[1], video.shape[2])))
                    file = f"{npz.stem}_{v}.mp4"
                    write_mp4(out / file, video, fps, scale)
                    entries.append({"file": file, "model": v, "episode": name, "captions": captions or []})
    finally:
        for h in cache.values():
            h.close()
    if uncaptioned and data is not None:
        notes.append(f"{uncaptioned} episode(s) not found in {data!r}: their captions are empty")
    manifest = {"source": src.name, "generation": {k: meta.get(k) for k in ("command", "date") if k in meta},
                "videos": entries, "notes": notes}
    (out / MANIFEST).write_text(json.dumps(manifest, indent=1))
    return manifest
