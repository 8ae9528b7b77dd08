"""Mixing Secrets (the Cambridge-MT multitrack library) in MedleyDB format.

Dataset card
------------
- 258 tracks, 4,529 stems described by SiddGururani/mixing_secrets in MedleyDB's metadata
  format (``origin: Mixing Secrets``, version '3.0'); audio from cambridge-mt.com (not
  redistributed; nothing is downloaded here). Used by Hung & Lerch (ISMIR 2020) with MedleyDB.
- On disk, as MedleyDB::

      <root>/<Id>/<Id>_METADATA.yaml        (or <metadata_dir>/<Id>_METADATA.yaml)
      <root>/<Id>/<Id>_MIX.wav | <Id>_MIX.mp3
      <root>/<Id>/<Id>_STEMS/<Id>_STEM_{drums,loops,synth,sfx}.wav   pre-summed groups
      <root>/<Id>/<Id>_STEMS/<NN_RawName>.wav                        single-raw stems
      <root>/<Id>/<Id>_ACTIVATION_CONF.lab  (optional; or <annotations_dir>/[Activation_Confidence/])

- Differences from MedleyDB: about 230 distinct stem labels, many outside MedleyDB's taxonomy,
  and raw labels that are parsed file names ('KickTrigger', 'Loop'); the pre-summed stems are
  labelled 'drum set' (drums), 'drum machine' (loops), 'synthesizer' (synth) and
  'fx/processed sound' (sfx). Two mixes are .mp3 and some are missing: then the mixture is the
  sum of the stems (``mixture_path`` None, recorded in the track's warnings).

Label map, layout options, unannotated labels: ``datasets/sources/mixing_secrets.yaml``.
"""
from __future__ import annotations

from typing import ClassVar

from iass.pipelines.sources.medleydb import MedleyDBAdapter


class MixingSecretsAdapter(MedleyDBAdapter):
    name: ClassVar[str] = "mixing_secrets"
    label_map: ClassVar[str] = "mixing_secrets.yaml"
