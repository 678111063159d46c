"""ChunkDataset / EpisodeDataset windows, strides, DataLoader use and corrupt-file errors."""

import h5py
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from envs.data import ChunkDataset, EpisodeDataset
from envs.episodes import EpisodeFileError, dummy_episode, episode_key, write_episodes


def _index(frames: torch.Tensor) -> list[int]:
    """dummy_episode encodes frame t as pixel value t."""
    return frames[:, 0, 0, 0].tolist()


@pytest.fixture
def episodes():
    return [dummy_episode(num_chunks=3, chunk_len=4, seed=0), dummy_episode(num_chunks=2, chunk_len=4, seed=1)]


@pytest.fixture
def h5_dir(tmp_path, episodes):
    write_episodes(tmp_path / "a.h5", [(episode_key(0), episodes[0])])
    write_episodes(tmp_path / "b.h5", [(episode_key(1), episodes[1])])
    return tmp_path


@pytest.mark.parametrize("source_kind", ["memory", "dir", "files"])
def test_chunk_windows(source_kind, episodes, h5_dir):
    source = {"memory": episodes, "dir": h5_dir, "files": [h5_dir / "a.h5", h5_dir / "b.h5"]}[source_kind]
    ds = ChunkDataset(source, context_frames=6, new_frames=4)
    assert len(ds) == 3 + 2
    item = ds[1]  # episode 0, chunk 1: target frames 5..8, context 0..4 with frame 0 repeated
    assert item["context"].dtype == torch.uint8 and item["context"].shape == (6, 8, 8, 3)
    assert item["target"].shape == (4, 8, 8, 3) and item["action"].dtype == torch.float32
    assert _index(item["target"]) == [5, 6, 7, 8]
    assert _index(item["context"]) == [0, 0, 1, 2, 3, 4]
    assert item["action"][:, 0].tolist() == [5, 6, 7, 8]  # action t-1 is behind frame t
    assert item["text"] == "skill number 1"


def test_long_context_spanning_target_and_stride(episodes):
    ds = ChunkDataset(episodes, context_frames=32, new_frames=6)  # target spans two chunks
    assert len(ds) == 2 + 1
    item = ds[0]
    assert _index(item["context"]) == [0] * 32 and _index(item["target"]) == [1, 2, 3, 4, 5, 6]
    assert item["text"] == "skill number 0"

    ds = ChunkDataset(episodes, context_frames=2, new_frames=2, frame_skip=2)
    item = ds[1]  # strided chunk length 2: chunk 1 keeps stored frames 6, 8
    assert _index(item["target"]) == [6, 8] and _index(item["context"]) == [2, 4]
    assert item["action"][:, 0].tolist() == [5.5, 7.5]  # mean of the skipped steps' actions
    with pytest.raises(ValueError, match="not divisible"):
        ChunkDataset(episodes, 2, 1, frame_skip=3)


def test_episode_dataset_layout(episodes):
    ds = EpisodeDataset(episodes, context_frames=3, new_frames=4, num_chunks=2)
    assert len(ds) == 1 + 1
    item = ds[0]  # 3 chunks: the run ends at the episode's last chunk
    assert item["frames"].shape == (3 + 2 * 4, 8, 8, 3) and item["actions"].shape == (2, 4, 5)
    assert _index(item["frames"]) == [2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]
    assert item["texts"] == ["skill number 1", "skill number 2"]
    assert _index(ds[1]["frames"]) == [0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8]  # frame 0 repeated before the start
    assert ds[1]["texts"] == ["skill number 0", "skill number 1"]
    Tc, Tn = 3, 4
    for c in range(2):  # chunk c's context is frames[c*Tn : c*Tn + Tc], its target follows
        ctx = item["frames"][c * Tn : c * Tn + Tc]
        tgt = item["frames"][Tc + c * Tn : Tc + (c + 1) * Tn]
        assert _index(ctx)[-1] + 1 == _index(tgt)[0]
        assert item["actions"][c, :, 0].tolist() == _index(tgt)
    first = EpisodeDataset(episodes, context_frames=3, new_frames=4, num_chunks=2, anchor="start")[0]
    assert _index(first["frames"]) == [0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8]  # the first episode's first chunks
    with pytest.raises(ValueError, match="anchor must be"):
        EpisodeDataset(episodes, 3, 4, num_chunks=2, anchor="middle")
    short = EpisodeDataset(episodes, context_frames=2, new_frames=2, num_chunks=2)[0]
    assert _index(short["frames"]) == [3, 4, 5, 6, 9, 10]  # Tn < L: each chunk's tail skipped
    with pytest.raises(ValueError, match="exceeds"):
        EpisodeDataset(episodes, 2, 5, num_chunks=1)


def test_dataloader_workers_and_collate(h5_dir):
    ds = ChunkDataset(h5_dir, context_frames=4, new_frames=4)
    batch = next(iter(DataLoader(ds, batch_size=5, num_workers=2)))
    assert batch["context"].shape == (5, 4, 8, 8, 3) and batch["target"].dtype == torch.uint8
    assert isinstance(batch["text"], list) and all(isinstance(t, str) for t in batch["text"])
    ep = next(iter(DataLoader(EpisodeDataset(h5_dir, 4, 4, 2), batch_size=2, num_workers=2)))
    assert ep["frames"].shape == (2, 12, 8, 8, 3) and len(ep["texts"]) == 2


def _with_cube(episode: dict, fields: str = "x,y,half_size,visible,visible_x,visible_y") -> dict:
    """The episode with a ``cube_pixel`` record that encodes frame t: x = t + 0.25, y = 100 + t, hidden (visible
    0) at frames 3 and 6, visible t / 10 elsewhere; columns in the order ``fields`` names them."""
    t = np.arange(len(episode["frames"]), dtype=np.float32)
    visible = np.where(np.isin(t, [3, 6]), 0, t / 10)
    values = dict(x=t + 0.25, y=100 + t, half_size=np.full_like(t, 1.5), visible=visible, visible_x=t, visible_y=t)
    record = np.stack([values[f] for f in fields.split(",")], axis=1).astype(np.float32)
    return {**episode, "cube_pixel": record, "attrs": {**episode["attrs"], "cube_pixel_fields": fields}}


@pytest.mark.parametrize("source_kind", ["memory", "file"])
def test_object_pixels_follow_the_frames(source_kind, episodes, tmp_path):
    """The cube records of a window are the rows of its frames: context padding, targets and stride alike."""
    cube = [_with_cube(episodes[0]), _with_cube(episodes[1], "visible,y,x,half_size")]
    if source_kind == "file":
        write_episodes(tmp_path / "c.h5", [(episode_key(i), e) for i, e in enumerate(cube)])
        cube = tmp_path / "c.h5"
    for ds, i in ((ChunkDataset(cube, context_frames=6, new_frames=4), 1), (ChunkDataset(cube, 2, 2, frame_skip=2), 1),
                  (ChunkDataset(cube, 3, 4), 3)):
        item = ds[i]
        frames = _index(item["context"]) + _index(item["target"])
        pixels = item["object_pixels"]
        assert pixels.dtype == torch.float32 and pixels.shape == (len(frames), 3) and item["frame_width"] == 8
        t = torch.tensor(frames, dtype=torch.float32)
        torch.testing.assert_close(pixels[:, 0], t + 0.25)
        torch.testing.assert_close(pixels[:, 1], 100 + t)
        torch.testing.assert_close(pixels[:, 2], torch.where((t == 3) | (t == 6), 0.0, t / 10))
    plain = ChunkDataset(episodes, 2, 2)[0]["object_pixels"]  # no record: NaN coordinates, never visible
    assert torch.isnan(plain[:, :2]).all() and (plain[:, 2] == 0).all()
    with pytest.raises(ValueError, match=r"episode 0: cube_pixel_fields \('x', 'y'\) lack \['visible'\]"):
        ChunkDataset([_with_cube(episodes[0], "x,y")], 2, 2)


def test_corrupt_files_raise_with_file_and_episode(tmp_path):
    path = tmp_path / "bad.h5"
    write_episodes(path, [(episode_key(3), dummy_episode(size=32))])
    data = path.read_bytes()
    (tmp_path / "trunc.h5").write_bytes(data[: len(data) // 3])
    with pytest.raises(EpisodeFileError, match="trunc.h5"):
        ChunkDataset(tmp_path / "trunc.h5", 2, 2)

    ds = ChunkDataset(path, 2, 2)
    with h5py.File(path) as f:
        info = f[f"{episode_key(3)}/frames"].id.get_chunk_info(1)
    with open(path, "r+b") as fh:
        fh.seek(info.byte_offset + 16)
        fh.write(b"\x13" * 64)
    with pytest.raises(EpisodeFileError, match=f"bad.h5.*{episode_key(3)}"):
        ds[1]
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no episodes"):
        ChunkDataset(tmp_path / "empty", 2, 2)
    with pytest.raises(EpisodeFileError, match="missing.h5.*no such file"):
        ChunkDataset(tmp_path / "missing.h5", 2, 2)
