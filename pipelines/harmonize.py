"""Harmonize one track's stems into the canonical taxonomy: one summed signal per instrument.

A stem's canonical instrument comes from its corpus' label map (``datasets/sources/<source>.yaml``
through :func:`taxonomy.stem_instrument`: every label of a list must map, the first decides).
Stems of one instrument are summed sample by sample (float32, so the sum of the written stems
equals the mixture exactly when the corpus' mixture is a plain sum).

Unknown vs inactive: when a track has a stem whose content the corpus does not describe
(``annotated=False``: MUSDB ``other``, MedleyDB 'Unlabeled'), every canonical instrument outside
the subtrees of the track's annotated stems is *unknown* (it may hide in that stem), except the
unannotated stem's own instrument, which has audio and a computed activity. A fully annotated
track has no unknowns: an instrument without a stem is silent (inactive). The taxonomy's
*residual* node (``other``) is the exception the readers add (:meth:`Taxonomy.target_known`): as
a target it means "the stem of everything else", which only a track with an unannotated stem
has, so on a fully annotated track it is unknown rather than silent.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from iass.pipelines.sources.base import SourceTrack, TrackAudio, TrackError
from iass.pipelines.taxonomy import Taxonomy, TaxonomyError, stem_instrument


@dataclass
class HarmonizedTrack:
    sample_rate: int
    num_samples: int
    instruments: dict[str, np.ndarray]          # canonical instrument -> (n, 2) float32
    source_stems: dict[str, list[str]]          # instrument -> stem ids summed into it
    source_labels: dict[str, list[str]]         # instrument -> those stems' primary labels
    annotated: dict[str, bool]                  # instrument -> all its stems annotated
    unknown_instruments: list[str]
    mixture: np.ndarray                         # the corpus' mixture, or the sum of stems
    mixture_is_sum: bool
    mixture_residual_db: float                  # 10 log10(|mix - sum|^2 / |mix|^2); -inf if exact
    warnings: list[str] = field(default_factory=list)


def instrument_of_stem(source: str, stem, track: str) -> str:
    try:
        return stem_instrument(source, list(stem.labels), track=track)
    except TaxonomyError as exc:
        raise TrackError(stem.path, str(exc), track) from None


def unknown_instruments(taxonomy: Taxonomy, annotated: dict[str, bool]) -> list[str]:
    """Instruments the track does not tell about (see module docstring), in taxonomy order."""
    if all(annotated.values()):
        return []
    known: set[str] = set()
    for inst, ok in annotated.items():
        if ok:
            known.update(taxonomy.descendants(inst))
        else:
            known.add(inst)
    return [i for i in taxonomy.instruments if i not in known]


def harmonize(track: SourceTrack, audio: TrackAudio, taxonomy: Taxonomy,
              mixture_tolerance_db: float = -30.0) -> HarmonizedTrack:
    """Sum the decoded stems of ``track`` per canonical instrument and check the mixture."""
    warnings = list(audio.warnings)
    n = max([a.shape[0] for a in audio.stems.values()]
            + ([audio.mixture.shape[0]] if audio.mixture is not None else []))
    inst_audio: dict[str, np.ndarray] = {}
    stems_of: dict[str, list[str]] = {}
    labels_of: dict[str, list[str]] = {}
    annotated: dict[str, bool] = {}
    owned: set[str] = set()
    total = np.zeros((n, 2), dtype=np.float32)
    for stem in track.stems:
        if stem.stem_id not in audio.stems:
            raise TrackError(stem.path, f"stem {stem.stem_id} was not decoded", track.native_id)
        inst = instrument_of_stem(track.source, stem, track.native_id)
        taxonomy.check(inst)
        x = _fit(audio.stems[stem.stem_id], n)
        if inst in inst_audio:
            if inst not in owned:  # never add into the decoded stem's own buffer
                inst_audio[inst] = inst_audio[inst].copy()
                owned.add(inst)
            inst_audio[inst] += x
        else:
            inst_audio[inst] = x  # a lone stem is used as decoded (no copy)
        total += x
        stems_of.setdefault(inst, []).append(stem.stem_id)
        labels_of.setdefault(inst, []).append(stem.labels[0] if stem.labels else "")
        annotated[inst] = annotated.get(inst, True) and bool(stem.annotated)
    if audio.mixture is None:
        mixture, is_sum, residual_db = total, True, float("-inf")
        warnings.append("no usable mixture in the source: the mixture is the sum of the stems")
    else:
        mixture, is_sum = _fit(audio.mixture, n), False
        residual_db = residual_energy_db(mixture, total)
        if residual_db > mixture_tolerance_db:
            warnings.append(f"mixture differs from the sum of stems by {residual_db:.1f} dB "
                            f"(tolerance {mixture_tolerance_db:g} dB)")
    order = [i for i in taxonomy.instruments if i in inst_audio]
    return HarmonizedTrack(
        sample_rate=audio.sample_rate, num_samples=n,
        instruments={i: inst_audio[i] for i in order},
        source_stems={i: stems_of[i] for i in order},
        source_labels={i: labels_of[i] for i in order},
        annotated={i: annotated[i] for i in order},
        unknown_instruments=unknown_instruments(taxonomy, {i: annotated[i] for i in order}),
        mixture=mixture, mixture_is_sum=is_sum, mixture_residual_db=residual_db, warnings=warnings,
    )


def residual_energy_db(mixture: np.ndarray, stem_sum: np.ndarray) -> float:
    e_mix = e_res = 0.0
    step = 1 << 18  # blocks: float64 accuracy without float64 copies of whole signals
    for i in range(0, len(mixture), step):
        mix = np.asarray(mixture[i:i + step], dtype=np.float64)
        res = mix - stem_sum[i:i + step]
        e_mix += float(np.einsum("ij,ij->", mix, mix))
        e_res += float(np.einsum("ij,ij->", res, res))
    if e_res == 0.0:
        return float("-inf")
    if e_mix == 0.0:
        return float("inf")
    return 10.0 * np.log10(e_res / e_mix)


def rms_db(audio: np.ndarray) -> float:
    a = np.asarray(audio)
    # float64 accumulation without a float64 copy of the signal
    ms = float(np.einsum("ij,ij->", a, a, dtype=np.float64)) / a.size if a.size else 0.0
    return 10.0 * np.log10(ms) if ms > 1e-12 else -120.0


def _fit(audio: np.ndarray, n: int) -> np.ndarray:
    a = np.asarray(audio, dtype=np.float32)
    if a.ndim == 1:
        a = np.stack([a, a], axis=1)
    if a.shape[0] < n:
        a = np.pad(a, ((0, n - a.shape[0]), (0, 0)))
    return a[:n]
