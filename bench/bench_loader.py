"""Loader throughput: our corpus loader vs Open-Unmix's own ``FixedSourcesTrackFolderDataset``
over the SAME WAV files, same 6 s chunks, same augmentations (random chunks, random track mixing,
gain, channel swap), same batch size and worker processes; and the loader's rate against what a
training step of the demo's IASS (cpu preset) consumes.

The WAVs are a bench corpus written in the real corpus format (every track with the same four
stems, which Open-Unmix's fixed-sources dataset requires); Open-Unmix reads them through a track
folder of symlinks ``train/<track>/{lead_vocals,drums,electric_bass,other}.wav``.

    python -m bench loader
"""
from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
# 150 timed batches: 1,200 chunks, 2 - 5 s per loader and round (40 batches timed well under a
# second of work, and the ratio moved 1.8 - 3.1 between runs on the same machine)
TRACKS, SECONDS, CHUNK_S, BATCH, WORKERS, BATCHES, ROUNDS = 12, 30.0, 6.0, 8, 2, 150, 3
STEMS = ["lead_vocals", "drums", "electric_bass", "other"]


def write_bench_corpus(root: Path) -> None:
    sys.path.insert(0, str(HERE.parent / "tests"))
    from corpus_fixtures import FixtureTrack, write_fixture_corpus

    full = [(0.0, SECONDS)]
    tracks = [FixtureTrack(f"bench{i:02d}", "train", SECONDS, {s: full for s in STEMS}) for i in range(TRACKS)]
    tracks.append(FixtureTrack("benchv", "valid", SECONDS, {s: full for s in STEMS}))
    write_fixture_corpus(root, tracks, hop=1024)


def rate(loader, batches: int) -> float:
    """Chunks per second after the first batch (worker start-up excluded)."""
    it = iter(loader)
    next(it)
    t = time.perf_counter()
    n = 0
    for _ in range(batches):
        batch = next(it)
        n += len(batch[0])
    return n / (time.perf_counter() - t)


def ours(root: Path) -> float:
    from iass.training.data import ChunkConfig, StepBatchSampler, TrainChunks, loader_options

    cfg = ChunkConfig(targets=("vocals", "drums", "bass"), chunk_samples=int(CHUNK_S * 44100), hop=1024)
    ds = TrainChunks(root, cfg)
    loader = torch.utils.data.DataLoader(ds, batch_sampler=StepBatchSampler(0, BATCHES + 1, BATCH),
                                         **loader_options(WORKERS))
    return rate(loader, BATCHES)


class OpenUnmixInWorker(torch.utils.data.Dataset):
    """Open-Unmix's dataset, unpickled in a spawned worker only after ``import_openunmix()`` (the
    worker is a fresh interpreter: ``openunmix.data`` needs the torchaudio stand-in there too)."""

    def __init__(self, dataset):
        self.dataset = dataset

    def __getstate__(self):
        import pickle

        return {"blob": pickle.dumps(self.dataset)}

    def __setstate__(self, state):
        import pickle

        from iass.training.umx import import_openunmix

        import_openunmix()
        self.dataset = pickle.loads(state["blob"])

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, index):
        return self.dataset[index]


def open_unmix(root: Path, folder: Path) -> float:
    from iass.pipelines.corpus_format import Corpus
    from iass.training.data import loader_options
    from iass.training.umx import import_openunmix

    data = import_openunmix().data
    corpus = Corpus(root)
    for tid in corpus.track_ids(split="train"):
        link = folder / "train" / tid
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to((root / corpus.track(tid)["mixture_path"]).parent, target_is_directory=True)
    ds = data.FixedSourcesTrackFolderDataset(
        root=str(folder), split="train", target_file="lead_vocals.wav",
        interferer_files=["drums.wav", "electric_bass.wav", "other.wav"], seq_duration=CHUNK_S,
        random_chunks=True, random_track_mix=True,
        source_augmentations=data.aug_from_str(["gain", "channelswap"]), sample_rate=44100.0)
    ds = OpenUnmixInWorker(ds)
    sampler = torch.utils.data.RandomSampler(ds, replacement=True, num_samples=(BATCHES + 1) * BATCH)
    # the same worker set-up as ours (spawned processes, same prefetch)
    loader = torch.utils.data.DataLoader(ds, batch_size=BATCH, sampler=sampler, **loader_options(WORKERS))
    return rate(loader, BATCHES)


def train_step_rate() -> float:
    """Chunks per second one training step of the demo's IASS (cpu preset, 6 targets) consumes."""
    sys.path.insert(0, str(HERE.parent))
    from bench.bench_model import CHUNK_FRAMES, build, timed

    torch.manual_seed(0)
    model, n_fft = build("iass_cpu_6")
    mix = torch.rand(BATCH, 2, n_fft // 2 + 1, CHUNK_FRAMES)
    target = torch.rand(BATCH, 6, 2, n_fft // 2 + 1, CHUNK_FRAMES)
    opt = torch.optim.Adam(model.parameters())

    def step():
        opt.zero_grad()
        est, logits = model(mix)
        ((est - target).pow(2).mean() + logits.mean()).backward()
        opt.step()

    best, _ = timed(step, reps=1)
    return BATCH / best


def main() -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        root, folder = Path(tmp) / "corpus", Path(tmp) / "umx_folder"
        write_bench_corpus(root)
        # alternate, so that load changes on a shared machine hit both alike
        ours_r, umx_r = [], []
        for _ in range(ROUNDS):
            ours_r.append(ours(root))
            umx_r.append(open_unmix(root, folder) if not umx_r else open_unmix_again(root, folder))
        consume = train_step_rate()
    best_ours, best_umx = max(ours_r), max(umx_r)
    rounds = sorted(o / u for o, u in zip(ours_r, umx_r))
    return {
        "chunk_seconds": CHUNK_S, "batch": BATCH, "workers": WORKERS, "tracks": TRACKS,
        "ours_chunks_per_s": best_ours, "open_unmix_chunks_per_s": best_umx,
        "ours_vs_open_unmix": best_ours / best_umx,
        # the same ratio round by round (each round runs both loaders back to back)
        "ours_vs_open_unmix_rounds_min": rounds[0], "ours_vs_open_unmix_rounds_max": rounds[-1],
        "iass_cpu_train_step_chunks_per_s": consume,
        "loader_vs_training_consumption": best_ours / consume,
        "cpu_count": os.cpu_count(),
    }


def open_unmix_again(root: Path, folder: Path) -> float:
    import shutil

    shutil.rmtree(folder, ignore_errors=True)
    return open_unmix(root, folder)


if __name__ == "__main__":
    sys.path.insert(0, str(HERE.parent))
    for k, v in main().items():
        print(f"{k}: {v}")
