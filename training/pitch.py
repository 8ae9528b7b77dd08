"""The pitch head's training side (``model.iass.pitch_weight`` > 0; see ``iass_model.py``).

:func:`check_pitch_labels` is the preflight of a run with a pitch head: a corpus whose training
and validation tracks have no known pitch (every real corpus without pitch annotations) would
train the head on nothing, so the run fails before its first step with one line saying so.
The labels are the corpus' piano rolls (``Corpus.read_pitch``: 88 keys, MIDI 21..108, on the
activity frames), NaN where unknown in the training examples (``ChunkConfig.pitch``).
"""
from __future__ import annotations

import logging

from iass.errors import ConfigError
from iass.training.iass_model import PITCH_KEYS, PITCH_LOW

__all__ = ["PITCH_KEYS", "PITCH_LOW", "check_pitch_labels", "pitch_tracks"]

log = logging.getLogger(__name__)


def pitch_tracks(corpus, split: str, targets) -> dict[str, list[str]]:
    """{target: the tracks of ``split`` whose roll of the target is known}."""
    ids = corpus.track_ids(split=split)
    return {t: [tid for tid in ids if corpus.pitch_target_known(tid, t)] for t in targets}


def check_pitch_labels(tr) -> None:
    """Some target has known pitch in the train and the valid split of ``tr``'s corpus (else a
    ConfigError naming model.iass.pitch_weight); a target without any is logged, not an error
    (drums: no pitch target; its pitch loss is masked out)."""
    corpus = tr.corpus
    for split in ("train", "valid"):
        known = pitch_tracks(corpus, split, tr.spec.targets)
        if not any(known.values()):
            raise ConfigError(
                f"params.yaml model.iass.pitch_weight = {tr.pitch_weight:g}, but no track of split "
                f"{split!r} of {corpus.root} has known pitch for any of the targets "
                f"{', '.join(tr.spec.targets)} (pitch labels come from synthesized tracks or "
                "MedleyDB's pitch annotations); set pitch_weight: 0 or use such a corpus")
        if split == "train" and tr.d.main:
            missing = [t for t, ids in known.items() if not ids]
            if missing:
                log.info(
                    "pitch head: no known pitch for %s in the train split (masked out of the pitch loss)",
                    ", ".join(missing))
