"""Checks a training run makes before its first step (:meth:`Trainer._check_data`): every failure
is one line (CorpusError / ConfigError) naming what is missing, instead of an error after hours of
training. ``tr`` is the :class:`~iass.training.train.Trainer` being set up."""
from __future__ import annotations

import numpy as np

from iass.errors import ConfigError, CorpusError


def check_data(tr) -> None:
    """Fail now, not after training, when the corpus or the config cannot support the run."""
    cfg, corpus = tr.cfg, tr.corpus
    for split, role in (("train", "training examples"), ("valid", "validation")):
        if not corpus.track_ids(split=split):
            raise CorpusError(f"{corpus.root}: no tracks in split {split!r} (needed for {role}); "
                              "rebuild the corpus with tracks in that split")
    for target in tr.spec.targets:
        corpus.taxonomy.check(target)   # a ConfigError naming the unknown target
    if tr.n_fft < tr.hop:
        where = ("model.iass.n_fft (or its preset)" if tr.kind == "iass"
                 else "stft.n_fft (or model.umx.n_fft)")
        raise ConfigError(f"{where} = {tr.n_fft} is shorter than the corpus hop {tr.hop}: "
                          "the STFT frames would leave gaps; use n_fft >= hop (e.g. 4 x hop)")
    known = {split: check_targets(tr, split) for split in ("train", "valid")}
    for split in ("train", "valid"):
        check_labels(tr, split, known[split])
    check_chunk_length(tr)
    if cfg.batch_size % tr.d.world:
        raise ConfigError(f"train.batch_size {cfg.batch_size} is not divisible by "
                          f"{tr.d.world} processes")
    if tr.spec.config.get("target_balance") and cfg.stats_examples <= 0:
        raise ConfigError("model.iass.target_balance needs train.stats_examples > 0 "
                          "(the target energies are measured on those chunks)")

def check_targets(tr, split: str) -> dict[str, list[str]]:
    """Every target is separated (known) in at least one track of ``split``; every activity
    shard of the split is on disk. Returns {target: the tracks that separate it}."""
    corpus = tr.corpus
    out = {}
    ids = corpus.track_ids(split=split)
    for shard in sorted({corpus.track(tid)["shard"] for tid in ids}):
        part = corpus.tables.activity_part(shard)
        if not part.is_file():
            raise CorpusError(f"{corpus.root}: activity labels missing: {part} (split {split!r}); "
                              "rebuild the corpus")
    for target in tr.spec.targets:
        known = [tid for tid in ids if corpus.target_known(tid, target)]
        if not known:
            raise CorpusError(
                f"{corpus.root}: target {target!r} is not separated by any of the {len(ids)} "
                f"tracks of split {split!r} (its audio is unknown in all of them"
                + (": only a corpus with a residual stem, as MUSDB's `other`, separates it"
                   if target in corpus.taxonomy.residual else "")
                + "); drop it from train.targets / --targets or add tracks that separate it")
        out[target] = known
    return out

def check_labels(tr, split: str, known: dict[str, list[str]]) -> None:
    """Every target has activity labels in a track of ``split`` that separates it."""
    corpus = tr.corpus
    for target in tr.spec.targets:
        if not any(np.isfinite(corpus.read_activity(tid, [target])[0]).any()
                   for tid in known[target]):
            raise CorpusError(
                f"{corpus.root}: target {target!r} has no activity labels in split {split!r} "
                f"(every frame unknown in the {len(known[target])} tracks that separate it); rebuild "
                "the corpus with labels for it")

def check_chunk_length(tr) -> None:
    """At least one training track holds a whole chunk (else every example is padding)."""
    corpus, chunk = tr.corpus, tr.chunks.chunk_samples
    lengths = [int(corpus.track(tid)["num_samples"]) for tid in corpus.track_ids(split="train")]
    if max(lengths) < chunk:
        raise CorpusError(
            f"{corpus.root}: no training track is as long as one chunk (train.chunk_seconds = "
            f"{chunk / tr.sample_rate:g} s; the longest is {max(lengths) / tr.sample_rate:.2f} s); "
            "lower train.chunk_seconds or add longer tracks")
