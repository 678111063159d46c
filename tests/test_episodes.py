"""Episode schema and h5 storage: round trip, validation, atomic writes, clear errors."""

import h5py
import numpy as np
import pytest

from envs.episodes import (
    EpisodeFileError,
    dummy_episode,
    episode_key,
    file_attrs,
    list_episodes,
    read_episode,
    validate_episode,
    write_episodes,
)


def _assert_same(a: dict, b: dict) -> None:
    for field in ("frames", "actions", "skill_ids", "reward", "success", "revisits"):
        np.testing.assert_array_equal(a[field], b[field])
        assert np.asarray(a[field]).dtype == np.asarray(b[field]).dtype
    assert a["language"] == b["language"]
    assert a["attrs"] == b["attrs"]


def test_round_trip_with_unicode_and_attrs(tmp_path):
    ep = dummy_episode(num_chunks=3, chunk_len=4)
    ep["language"][1] = "öffne die Schublade 抽屉"
    ep["goal"] = ep["frames"][-1].copy()
    path = tmp_path / "a.h5"
    keys = write_episodes(path, {"episode_0": ep}, file_attrs={"skills": ["a", "b"]})
    assert keys == ["episode_0"] and list_episodes(path) == ["episode_0"]
    back = read_episode(path, "episode_0")
    _assert_same(ep, back)
    np.testing.assert_array_equal(back["goal"], ep["goal"])
    assert file_attrs(path)["skills"] == ["a", "b"]
    with h5py.File(path) as f:
        ds = f["episode_0/frames"]
        assert ds.chunks is not None and ds.compression == "lzf"
        assert h5py.check_string_dtype(f["episode_0/language"].dtype).encoding == "utf-8"
    assert not list(tmp_path.glob(".*tmp*"))  # temp file renamed away


def test_append_and_duplicate_key(tmp_path):
    path = tmp_path / "a.h5"
    write_episodes(path, [(episode_key(0), dummy_episode(seed=0))])
    write_episodes(path, [(episode_key(1), dummy_episode(seed=1))], append=True)
    assert list_episodes(path) == [episode_key(0), episode_key(1)]
    with pytest.raises(ValueError, match="already exists"):
        write_episodes(path, [(episode_key(1), dummy_episode())], append=True)
    assert list_episodes(path) == [episode_key(0), episode_key(1)]  # failed write left file intact


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda e: e.update(frames=e["frames"][:-1]), "1 \\+ K\\*L"),
        (lambda e: e.update(actions=e["actions"].astype(np.float64)), "dtype"),
        (lambda e: e.pop("revisits"), "missing fields"),
        (lambda e: e["attrs"].pop("seed"), "attrs lack"),
        (lambda e: e.update(language=e["language"][:-1]), "language strings"),
        (lambda e: e.update(revisits=np.array([[0, 999]], np.int64)), "out of range"),
    ],
)
def test_validate_rejects_bad_episodes(mutate, message):
    ep = dummy_episode()
    validate_episode(ep)
    mutate(ep)
    with pytest.raises(ValueError, match=message):
        validate_episode(ep)


def test_missing_file_and_episode(tmp_path):
    with pytest.raises(EpisodeFileError, match="no such file"):
        read_episode(tmp_path / "nope.h5", "episode_0")
    path = tmp_path / "a.h5"
    write_episodes(path, {"episode_0": dummy_episode()})
    with pytest.raises(EpisodeFileError, match="'episode_9'.*no such episode"):
        read_episode(path, "episode_9")


def test_truncated_file_names_file_and_episode(tmp_path):
    path = tmp_path / "t.h5"
    write_episodes(path, {"episode_0": dummy_episode(size=32)})
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(EpisodeFileError) as err:
        read_episode(path, "episode_0")
    assert str(path) in str(err.value) and "episode_0" in str(err.value)
    with pytest.raises(EpisodeFileError, match="t.h5"):
        list_episodes(path)


def test_corrupt_chunk_and_missing_field(tmp_path):
    path = tmp_path / "c.h5"
    write_episodes(path, {"episode_0": dummy_episode(size=32)})
    with h5py.File(path) as f:
        info = f["episode_0/frames"].id.get_chunk_info(0)
    with open(path, "r+b") as fh:  # scribble over the first compressed frame chunk
        fh.seek(info.byte_offset)
        fh.write(b"\x13" * info.size)
    with pytest.raises(EpisodeFileError, match="c.h5.*episode_0.*corrupt"):
        read_episode(path, "episode_0")

    path = tmp_path / "m.h5"
    write_episodes(path, {"episode_0": dummy_episode()})
    with h5py.File(path, "a") as f:
        del f["episode_0/actions"]
    with pytest.raises(EpisodeFileError, match="m.h5.*episode_0.*missing field 'actions'"):
        read_episode(path, "episode_0")
