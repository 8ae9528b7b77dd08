"""How a synthesized stem was rendered: soundfont (file name, sha256) and GM program per part.

``iass synth`` records it in every layout (:mod:`iass.pipelines.synth.layouts`), in places the
corpora's own tools never read:

* ``native`` (source ``synth``): ``track.json``, each ``instruments[*]`` entry (the stem is
  ``stems/<instrument>.wav``);
* MedleyDB / Mixing Secrets layouts: ``iass_render`` inside each stem of ``<Id>_METADATA.yaml``;
* MUSDB layouts: the sidecar ``iass_render.json`` in the track folder (HQ) or
  ``<Artist - Title>.iass_render.json`` beside the ``.stem.mp4``; per MUSDB stem, every part
  summed into it.

The corpus build keeps it in ``stems.parquet`` (``synth_render``: one entry per part summed into
the corpus stem). Recorded audio has none of these, and a track without them gets ``{}``: the
records are provenance, never a reason to reject a track.
"""
from __future__ import annotations

import json
from pathlib import Path

from iass.pipelines.sources.base import SourceTrack, TrackRef

RENDER_KEY = "iass_render"
FIELDS = ("instrument", "soundfont", "soundfont_sha256", "bank", "program")


def _record(doc) -> dict | None:
    if not isinstance(doc, dict) or not doc.get("soundfont"):
        return None
    try:
        return {"instrument": str(doc.get("instrument") or ""), "soundfont": str(doc["soundfont"]),
                "soundfont_sha256": str(doc.get("soundfont_sha256") or ""),
                "bank": int(doc.get("bank", 128 if doc.get("is_drum") else 0)),
                "program": int(doc.get("program", 0))}
    except (TypeError, ValueError):
        return None


def _records(items) -> list[dict]:
    return [r for r in (_record(d) for d in items) if r is not None]


def render_records(ref: TrackRef, track: SourceTrack) -> dict[str, list[dict]]:
    """``{stem_id: [record, ...]}`` of a synthesized track; ``{}`` for anything else."""
    location = Path(ref.location)
    try:
        if track.source == "synth":
            info = json.loads(location.read_text(encoding="utf-8"))
            return {str(i.get("instrument")): _records([i]) for i in info.get("instruments") or []
                    if isinstance(i, dict) and _record(i)}
        if track.source in ("medleydb", "mixing_secrets"):
            if location.suffix != ".yaml":
                return {}
            import yaml

            stems = (yaml.safe_load(location.read_text(encoding="utf-8")) or {}).get("stems") or {}
            return {sid: _records([spec.get(RENDER_KEY)]) for sid, spec in stems.items()
                    if isinstance(spec, dict) and _record(spec.get(RENDER_KEY))}
        if track.source == "musdb":
            sidecar = (location / f"{RENDER_KEY}.json" if location.is_dir()
                       else location.with_name(f"{ref.native_id}.{RENDER_KEY}.json"))
            if not sidecar.is_file():
                return {}
            stems = json.loads(sidecar.read_text(encoding="utf-8")).get("stems") or {}
            return {name: _records(recs) for name, recs in stems.items()
                    if isinstance(recs, list) and _records(recs)}
    except Exception:  # noqa: BLE001 - unreadable provenance is no provenance, never a reject
        return {}
    return {}
