"""How a synthesized stem was rendered: soundfont (file name, sha256) and GM program per part.

``iass synth`` records it in every layout (:mod:`iass.pipelines.synth.layouts`), in places the
corpora's own tools never read, and each adapter reads it with the rest of the track's metadata
into its stems' ``extra['render']`` (a list of records, one per part summed into the stem):

* ``native`` (source ``synth``): ``track.json``, each ``instruments[*]`` entry (the stem is
  ``stems/<instrument>.wav``);
* MedleyDB / Mixing Secrets layouts: ``iass_render`` inside each stem of ``<Id>_METADATA.yaml``;
* MUSDB layouts: the sidecar ``iass_render.json`` in the track folder (HQ) or
  ``<Artist - Title>.iass_render.json`` beside the ``.stem.mp4``; per MUSDB stem, every part
  summed into it. The sidecar is one of the track's ``side_files`` (in its cache key).

The corpus build keeps the records in ``stems.parquet`` (``synth_render``). Recorded audio has
none, and a malformed record is left out: the records are provenance, never a reason to reject
a track (an unreadable MUSDB sidecar is a warning of the track).
"""
from __future__ import annotations

from pathlib import Path

RENDER_KEY = "iass_render"   # per-stem record: MedleyDB yaml key and MUSDB sidecar file stem
FIELDS = ("instrument", "soundfont", "soundfont_sha256", "bank", "program")


def parse_record(doc) -> dict | None:
    """One render record (the :data:`FIELDS`), or None when ``doc`` is not one."""
    if not isinstance(doc, dict) or not doc.get("soundfont"):
        return None
    try:
        return {"instrument": str(doc.get("instrument") or ""), "soundfont": str(doc["soundfont"]),
                "soundfont_sha256": str(doc.get("soundfont_sha256") or ""),
                "bank": int(doc.get("bank", 128 if doc.get("is_drum") else 0)),
                "program": int(doc.get("program", 0))}
    except (TypeError, ValueError):
        return None


def parse_records(items) -> list[dict]:
    """The records among ``items`` (anything else, e.g. None or a malformed entry, left out)."""
    if not isinstance(items, (list, tuple)):
        return []
    return [r for r in (parse_record(d) for d in items) if r is not None]


def musdb_sidecar(location: Path, native_id: str) -> Path:
    """Where a MUSDB-layout track's render records are: in its folder (HQ) or beside its
    ``.stem.mp4``."""
    location = Path(location)
    return (location / f"{RENDER_KEY}.json" if location.is_dir()
            else location.with_name(f"{native_id}.{RENDER_KEY}.json"))
