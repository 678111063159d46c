"""The study database (SQLite, standard library).

Every write is one transaction that is committed before the web app answers, so a rating the rater saw
accepted survives a crash or kill of the server; a restart with the same database resumes the study.
A unique constraint on (rater, video) refuses a second rating of one video by one rater, also between
two racing requests. Videos are known to raters only by a random opaque id; the model name stays in the
database for the report.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import secrets
import sqlite3
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

CRITERIA: tuple[str, ...] = ("quality", "coherence", "adherence")
CRITERIA_TEXT = {
    "quality": "Video quality: are the frames sharp, clean and free of artifacts?",
    "coherence": "Coherence: do the events flow naturally, without abrupt changes or jumps?",
    "adherence": "Action adherence: does the video do what the action captions say, in that order?",
}
MIN_RATINGS = 3  # every video is rated by at least this many different raters
PENDING_S = 600.0  # a video shown to a rater counts as "being rated" for this long (assignment spreading)
MAX_RATER_LEN = 64

SCHEMA = """
CREATE TABLE IF NOT EXISTS videos (
    id       TEXT PRIMARY KEY,              -- random opaque id, the only name raters see
    file     TEXT NOT NULL UNIQUE,          -- path inside the videos folder
    model    TEXT NOT NULL,                 -- model / variant (never shown to raters)
    episode  TEXT NOT NULL DEFAULT '',
    captions TEXT NOT NULL DEFAULT '[]',    -- JSON list of the action captions, in order
    active   INTEGER NOT NULL DEFAULT 1     -- 0: no longer in the videos folder (its ratings are kept)
);
CREATE TABLE IF NOT EXISTS ratings (
    id        INTEGER PRIMARY KEY AUTOINCREMENT,
    rater     TEXT NOT NULL,
    video     TEXT NOT NULL REFERENCES videos(id),
    quality   REAL NOT NULL CHECK (quality BETWEEN 0 AND 1),
    coherence REAL NOT NULL CHECK (coherence BETWEEN 0 AND 1),
    adherence REAL NOT NULL CHECK (adherence BETWEEN 0 AND 1),
    created   TEXT NOT NULL,
    UNIQUE (rater, video)
);
CREATE TABLE IF NOT EXISTS assignments (
    rater    TEXT PRIMARY KEY,              -- the video each rater is looking at now
    video    TEXT NOT NULL REFERENCES videos(id),
    assigned REAL NOT NULL
);
"""


class RatingError(ValueError):
    """A rating the study refuses; the message says why (shown to the rater, HTTP 400)."""


class StudyError(RuntimeError):
    """The videos folder does not fit the database (e.g. a video's model changed)."""


def check_rater(rater: Any) -> str:
    if rater is None or (isinstance(rater, str) and not rater.strip()):
        raise RatingError("missing field: rater (enter your rater name)")
    if not isinstance(rater, str):
        raise RatingError("rater must be a string")
    rater = rater.strip()
    if len(rater) > MAX_RATER_LEN or not rater.isprintable():
        raise RatingError(f"rater name must be printable and at most {MAX_RATER_LEN} characters")
    return rater


def parse_rating(data: Mapping[str, Any]) -> tuple[str, str, dict[str, float]]:
    """(rater, video id, {criterion: score}) from a form or JSON body; RatingError with a clear message."""
    missing = [k for k in ("rater", "video", *CRITERIA)
               if data.get(k) is None or (isinstance(data.get(k), str) and not data[k].strip())]
    if missing:
        raise RatingError(f"missing field{'s' if len(missing) > 1 else ''}: {', '.join(missing)}")
    rater = check_rater(data["rater"])
    video = data["video"]
    if not isinstance(video, str):
        raise RatingError("video must be a string id")
    scores: dict[str, float] = {}
    for k in CRITERIA:
        raw = data[k]
        if isinstance(raw, bool):
            raise RatingError(f"{k} must be a number from 0 to 1, got {raw!r}")
        try:
            value = float(raw)
        except (TypeError, ValueError):
            raise RatingError(f"{k} must be a number from 0 to 1, got {raw!r}") from None
        if not math.isfinite(value) or not 0.0 <= value <= 1.0:
            raise RatingError(f"{k} must be between 0 and 1, got {raw!r}")
        scores[k] = value
    return rater, video.strip(), scores


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


class Store:
    """The study database at ``path`` (created if absent). Thread-safe: one connection per call."""

    def __init__(self, path: str | Path, min_ratings: int = MIN_RATINGS):
        self.path = Path(path)
        self.min_ratings = min_ratings
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as conn:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.executescript(SCHEMA)

    @contextlib.contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        conn = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        try:
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA foreign_keys=ON")
            conn.execute("PRAGMA synchronous=FULL")
            yield conn
        finally:
            conn.close()

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """BEGIN IMMEDIATE ... COMMIT (ROLLBACK on any error): all of it or nothing."""
        with self._connect() as conn:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    # ------------------------------------------------------------------------------------------ videos
    def sync_videos(self, entries: Sequence[Mapping[str, Any]]) -> dict[str, int]:
        """Register the folder's videos (``file``, ``model``, optional ``episode``, ``captions``): new
        files get a fresh opaque id, known files keep theirs, files no longer listed stop being assigned."""
        counts = {"new": 0, "kept": 0, "inactive": 0}
        with self._transaction() as conn:
            known = {r["file"]: r for r in conn.execute("SELECT file, model FROM videos")}
            listed = set()
            for e in entries:
                file, model = str(e["file"]), str(e["model"])
                captions = json.dumps([str(c) for c in e.get("captions", [])])
                episode = str(e.get("episode", ""))
                listed.add(file)
                if file in known:
                    if known[file]["model"] != model:
                        raise StudyError(f"{file!r} is rated as model {known[file]['model']!r} in the database "
                                         f"but the manifest now says {model!r}; use a new --db for a new study")
                    conn.execute("UPDATE videos SET captions=?, episode=?, active=1 WHERE file=?",
                                 (captions, episode, file))
                    counts["kept"] += 1
                else:
                    conn.execute("INSERT INTO videos (id, file, model, episode, captions) VALUES (?, ?, ?, ?, ?)",
                                 (secrets.token_hex(8), file, model, episode, captions))
                    counts["new"] += 1
            for file in set(known) - listed:
                conn.execute("UPDATE videos SET active=0 WHERE file=?", (file,))
                counts["inactive"] += 1
        return counts

    def video(self, video_id: str) -> dict | None:
        with self._connect() as conn:
            row = conn.execute("SELECT * FROM videos WHERE id=?", (video_id,)).fetchone()
        return None if row is None else {**dict(row), "captions": json.loads(row["captions"])}

    def videos(self) -> list[dict]:
        with self._connect() as conn:
            rows = conn.execute("SELECT * FROM videos ORDER BY file").fetchall()
        return [{**dict(r), "captions": json.loads(r["captions"])} for r in rows]

    # ----------------------------------------------------------------------------------------- ratings
    def add_rating(self, data: Mapping[str, Any]) -> int:
        """Validate and store one rating in one transaction; returns its row id. RatingError if refused."""
        rater, video, scores = parse_rating(data)
        try:
            with self._transaction() as conn:
                row = conn.execute("SELECT active FROM videos WHERE id=?", (video,)).fetchone()
                if row is None:
                    raise RatingError(f"unknown video id {video!r}")
                cur = conn.execute(
                    "INSERT INTO ratings (rater, video, quality, coherence, adherence, created) "
                    "VALUES (?, ?, ?, ?, ?, ?)", (rater, video, *(scores[k] for k in CRITERIA), _now()))
                conn.execute("DELETE FROM assignments WHERE rater=? AND video=?", (rater, video))
                return int(cur.lastrowid)
        except sqlite3.IntegrityError as err:
            if "UNIQUE" in str(err):
                raise RatingError(f"rater {rater!r} has already rated video {video!r}; "
                                  "each rater rates each video once") from None
            raise

    def has_rated(self, rater: str, video_id: str) -> bool:
        with self._connect() as conn:
            return conn.execute("SELECT 1 FROM ratings WHERE rater=? AND video=?", (rater, video_id)).fetchone() is not None

    def ratings(self) -> list[dict]:
        """Every rating with its video's model and episode (for the report)."""
        with self._connect() as conn:
            rows = conn.execute(
                "SELECT r.*, v.model, v.episode, v.file FROM ratings r JOIN videos v ON v.id = r.video "
                "ORDER BY r.id").fetchall()
        return [dict(r) for r in rows]

    # -------------------------------------------------------------------------------------- assignment
    def next_video(self, rater: str) -> dict | None:
        """The video ``rater`` should rate now, or None when they have rated every video.

        A rater keeps the video they were shown until they rate it (a reload shows the same one).
        Otherwise the next one is, among the active videos they have not rated, the one with the fewest
        ratings plus other raters' open assignments, so every video reaches ``min_ratings`` raters before
        any gets more; ties are broken in a per-rater pseudo-random order (no fixed model order)."""
        rater = check_rater(rater)
        with self._transaction() as conn:
            row = conn.execute(
                "SELECT a.video FROM assignments a JOIN videos v ON v.id = a.video WHERE a.rater=? AND v.active=1 "
                "AND NOT EXISTS (SELECT 1 FROM ratings r WHERE r.rater=a.rater AND r.video=a.video)",
                (rater,)).fetchone()
            if row is not None:
                video_id = row["video"]
            else:
                now = time.time()
                candidates = conn.execute(
                    "SELECT v.id, (SELECT COUNT(*) FROM ratings r WHERE r.video=v.id) AS n, "
                    "(SELECT COUNT(*) FROM assignments a WHERE a.video=v.id AND a.rater<>? AND a.assigned>?) AS p "
                    "FROM videos v WHERE v.active=1 AND NOT EXISTS "
                    "(SELECT 1 FROM ratings r WHERE r.video=v.id AND r.rater=?)",
                    (rater, now - PENDING_S, rater)).fetchall()
                if not candidates:
                    conn.execute("DELETE FROM assignments WHERE rater=?", (rater,))
                    return None
                video_id = min(candidates, key=lambda c: (c["n"] + c["p"], _shuffle_key(rater, c["id"])))["id"]
                conn.execute("INSERT OR REPLACE INTO assignments (rater, video, assigned) VALUES (?, ?, ?)",
                             (rater, video_id, now))
        return self.video(video_id)

    def progress(self, rater: str | None = None) -> dict[str, int]:
        """Videos, ratings, videos with at least ``min_ratings`` raters, raters, and what ``rater`` did."""
        with self._connect() as conn:
            counts = [r[0] for r in conn.execute(
                "SELECT (SELECT COUNT(*) FROM ratings r WHERE r.video=v.id) FROM videos v WHERE v.active=1")]
            out = {
                "videos": len(counts),
                "complete": sum(c >= self.min_ratings for c in counts),
                "min_ratings": self.min_ratings,
                "ratings": conn.execute("SELECT COUNT(*) FROM ratings").fetchone()[0],
                "raters": conn.execute("SELECT COUNT(DISTINCT rater) FROM ratings").fetchone()[0],
            }
            if rater is not None:
                out["rated_by_you"] = conn.execute(
                    "SELECT COUNT(*) FROM ratings r JOIN videos v ON v.id=r.video WHERE r.rater=? AND v.active=1",
                    (rater,)).fetchone()[0]
        return out


def _shuffle_key(rater: str, video_id: str) -> str:
    return hashlib.sha256(f"{rater}\0{video_id}".encode()).hexdigest()
