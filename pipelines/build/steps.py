"""The per-track steps of the build, plain functions (flow.py runs them in one task per track):

    read_validate -> harmonize_track -> label_track_step -> write_track

Each returns the input of the next step, or a final result dict: ``status`` ``rejected`` (the
track is quarantined with a one-line reason naming the stage and file), ``cached`` (the content
cache vouches for it: the later steps are skipped) or ``failed`` (the OUTPUT is at fault, e.g. a
full disk: the build stops). :func:`run_track` chains them."""
from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np

from iass.io import atomic_write_parquet, write_wav
from iass.pipelines import activity as act
from iass.pipelines import corpus_format as cf
from iass.pipelines.build.cache import (
    CachePaths,
    audio_dir_name,
    dir_mtime,
    hash_source_files,
    input_digest,
    is_fresh,
    label_key,
    load_record,
    write_record,
)
from iass.pipelines.build.config import BuildConfig, disk_error_message, is_disk_error
from iass.pipelines.corpus_check import activity_digest, notes_digest
from iass.pipelines.harmonize import HarmonizedTrack, harmonize, rms_db
from iass.pipelines.sources.base import SourceAdapter, SourceTrack, TrackError, TrackRef, get_adapter
from iass.pipelines.splits import audio_fingerprint

log = logging.getLogger(__name__)


# ------------------------------------------------------------------------- small helpers
def _scrub(text: str, roots: Iterable[tuple[str, str]]) -> str:
    """Replace source roots by '<source>:' so messages carry no absolute path (version-stable)."""
    for name, root in roots:
        for form in {str(root), str(Path(root).resolve())}:
            if form and form != ".":
                text = text.replace(form.rstrip("/") + "/", f"{name}:").replace(form, f"{name}:")
    return text


def _round(x: float | None, nd: int = 4) -> float | None:
    if x is None or not np.isfinite(x):
        return x
    return round(float(x), nd)


def is_utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # undecodable bytes of a file name (surrogateescape)
        return False
    return True


def _printable(text: str) -> str:
    """A table-safe form of a name that may hold undecodable file-name bytes (shown as U+FFFD)."""
    return text if is_utf8(text) else \
        text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def reject(ref: TrackRef, stage: str, path: str, reason: str, cfg: BuildConfig) -> dict:
    from iass.pipelines.sources.resolve import is_path_option

    # folders of path options (annotations_dir, metadata_dir) first: '<source>.<option>:'
    roots = [(f"{ref.source}.{k}", str(v)) for k, v in sorted(cfg.options_of(ref.source).items())
             if is_path_option(k) and v] + list(cfg.sources)
    one_line = " ".join(_scrub(_printable(str(reason)), roots).split())
    rj = {"source": ref.source, "native_id": _printable(ref.native_id),
          "path": _scrub(_printable(str(path)), roots), "stage": stage, "reason": one_line}
    _step_log(logging.WARNING, f"rejected ({stage}) {rj['path']}: {one_line}")
    return {"status": "rejected", "reject": rj}


def _step_log(level: int, message: str) -> None:
    """Log into the Prefect task run of the step (shown in the UI beside it); plain logging
    outside a run (the steps called as functions)."""
    try:
        from prefect.context import TaskRunContext

        if TaskRunContext.get() is not None:
            from prefect.logging import get_run_logger

            get_run_logger().log(level, message)
            return
    except Exception:  # noqa: BLE001 - logging must never fail a track
        pass
    log.debug(message)


def _failure(ref: TrackRef, stage: str, exc: BaseException, cfg: BuildConfig) -> dict:
    """The result of a step that raised: a quarantined track, or the build's end (full disk)."""
    if isinstance(exc, TrackError):
        return reject(ref, stage, exc.path, exc.reason, cfg)
    # (a corrupt file the adapter did not anticipate: libsndfile raises RuntimeError, ...)
    # ... but a full disk is not the track's fault: quarantining it would publish a corpus
    # with tracks silently missing. Stop the build; the published version stays as it was.
    if is_disk_error(exc):  # returned, not raised: the flow stops with this one line
        return {"status": "failed", "error": disk_error_message(Path(cfg.out), exc)}
    path = getattr(exc, "filename", None) or ref.location
    return reject(ref, stage, str(path), f"{type(exc).__name__}: {' '.join(str(exc).split())}", cfg)


def _read_wav(path: Path) -> np.ndarray:
    import soundfile as sf

    data, _ = sf.read(str(path), dtype="float32", always_2d=True)
    return data


# ------------------------------------------------------------------- what the steps pass on
@dataclass
class ReadTrack:
    """read + validate's result: the parsed track and its cache keys."""

    ref: TrackRef
    adapter: SourceAdapter
    track: SourceTrack
    track_id: str
    shard: str
    files: dict[str, list]
    outside: dict[str, str]
    input_digest: str
    label_key: str
    method_hint: str
    prev: dict | None
    audio_ok: bool          # the corpus' own audio of this input is there: only relabel
    pitch_hint: bool = False  # the track has pitch sources


@dataclass
class Labelled:
    method: str
    table: Any              # pyarrow Table (ACTIVITY_SCHEMA)
    warnings: list[str]
    rec: dict | None = None  # the previous record (a relabel), else None
    pitch: list = field(default_factory=list)  # PITCH_SCHEMA rows (instruments with known pitch)
    notes: Any = None       # pyarrow Table (NOTES_SCHEMA) of those instruments, or None


# ----------------------------------------------------------------------------- the steps
def read_validate(ref: TrackRef, cfg: BuildConfig) -> ReadTrack | dict:
    """Parse the track's metadata, check its files (no decode), hash them; a cached track ends here."""
    out = Path(cfg.out)
    stage = "read"
    try:
        adapter = get_adapter(ref.source, **cfg.options_of(ref.source))
        track = adapter.read(ref)
        stage = "validate"
        problems = adapter.validate(track)
        if problems:
            return reject(ref, stage, problems[0].split(": ")[0] if ": " in problems[0]
                          else ref.location, "; ".join(problems), cfg)
        track_id = cf.make_track_id(ref.source, ref.native_id)
        shard = cf.shard_of(track_id, cfg.num_shards)
        prev = load_record(out, track_id)
        files, outside = hash_source_files(ref, track, cfg, prev)
        digest = input_digest(ref, {k: v[2] for k, v in files.items()}, cfg)
        method_hint = ("notes" if track.note_labels_path is not None else
                       "medleydb_lab" if cfg.use_medleydb_lab and track.activation_conf_path else
                       "activation_conf")
        pitch_hint = bool(track.pitch_sources)
        lkey = label_key(digest, method_hint, cfg, pitch_hint)
        if is_fresh(prev, out, track_id, shard, digest, cfg, ref.source, lkey):
            if (prev.get("files") != files or prev.get("dir_mtime_ns") != dir_mtime(ref)
                    or (prev.get("outside") or {}) != outside or prev.get("pitch_hint") != pitch_hint):
                # only mtimes moved (touch, copy), or a record of before pitch labels: refresh it
                prev.update(files=files, dir_mtime_ns=dir_mtime(ref), pitch_hint=pitch_hint)
                if outside:
                    prev["outside"] = outside
                write_record(out, track_id, prev)
            prev["status"] = "cached"
            return prev
        return ReadTrack(ref, adapter, track, track_id, shard, files, outside, digest, lkey,
                         method_hint, prev, is_fresh(prev, out, track_id, shard, digest, cfg, ref.source),
                         pitch_hint)
    except Exception as exc:  # noqa: BLE001 - one bad track must not stop the others
        return _failure(ref, stage, exc, cfg)


def harmonize_track(rt: ReadTrack, cfg: BuildConfig) -> HarmonizedTrack | dict:
    """Decode the stems (and mixture) and map them onto the taxonomy's instruments."""
    from iass.pipelines.taxonomy import load_taxonomy

    stage = "load"
    try:
        audio = rt.adapter.load(rt.track, cfg.sample_rate)
        stage = "harmonize"
        return harmonize(rt.track, audio, load_taxonomy(), cfg.mixture_tolerance_db)
    except Exception as exc:  # noqa: BLE001
        return _failure(rt.ref, stage, exc, cfg)


def label_track_step(rt: ReadTrack, harm: HarmonizedTrack | None, cfg: BuildConfig) -> Labelled | dict:
    """Frame-level activity of every instrument (and the pitch labels of the track): from ``harm``
    (a new build) or from the corpus' own WAVs of the previous record (only the label params
    changed)."""
    from iass.pipelines.notes import track_pitch
    from iass.pipelines.taxonomy import load_taxonomy

    try:
        if harm is not None:
            warnings = list(harm.warnings)
            method, table = label_track(rt.track, rt.track_id, harm.instruments, harm.source_stems,
                                        cf.num_frames(harm.num_samples, cfg.hop), cfg, warnings)
            pitch, notes = track_pitch(rt.track, rt.track_id, harm.source_stems, harm.num_samples,
                                       cfg.sample_rate, load_taxonomy())
            return Labelled(method, table, warnings, pitch=pitch, notes=notes if pitch else None)
        rec = dict(rt.prev)
        rows = rec["track"]
        out = Path(cfg.out)
        instruments = {s["instrument"]: _read_wav(out / s["path"]) for s in rec["stems"]}
        stems_of = {s["instrument"]: list(s["source_stems"]) for s in rec["stems"]}
        warnings = [w for w in rows["warnings"] if not w.startswith("activation .lab not used")]
        n_frames = cf.num_frames(int(rows["num_samples"]), cfg.hop)  # the hop may have changed
        method, table = label_track(rt.track, rt.track_id, instruments, stems_of, n_frames, cfg,
                                    warnings)
        rows.update(activity_method=method, hop=cfg.hop, num_frames=n_frames, warnings=warnings)
        pitch, notes = track_pitch(rt.track, rt.track_id, stems_of, int(rows["num_samples"]),
                                   int(rows["sample_rate"]), load_taxonomy())
        return Labelled(method, table, warnings, rec=rec, pitch=pitch, notes=notes if pitch else None)
    except Exception as exc:  # noqa: BLE001
        return _failure(rt.ref, "label", exc, cfg)


def write_track(rt: ReadTrack, harm: HarmonizedTrack | None, lab: Labelled, cfg: BuildConfig) -> dict:
    """Write the WAVs (a new build), the track's activity rows and, last, its cache record."""
    out = Path(cfg.out)
    ref = rt.ref
    try:
        if harm is not None:
            rec = _write_audio(ref, rt.track, rt.track_id, rt.shard, harm, cf.CorpusLayout(out), cfg,
                               audio_dir_name(rt.track_id, rt.input_digest))
            rec["track"].update(activity_method=lab.method, warnings=lab.warnings)
            status = "built"
        else:
            rec, status = lab.rec, "relabelled"
        rec["track"]["input_digest"] = rt.input_digest
        rec["track"]["warnings"] = [_scrub(w, cfg.sources) for w in rec["track"]["warnings"]]
        rec.update(track_id=rt.track_id, source=ref.source, native_id=ref.native_id, shard=rt.shard,
                   input_digest=rt.input_digest, label_key=rt.label_key, files=rt.files,
                   method_hint=rt.method_hint, dir_mtime_ns=dir_mtime(ref),
                   declared_split=rt.track.split, activity_digest=activity_digest(lab.table),
                   activity_rows=lab.table.num_rows)
        rec.pop("outside", None)
        rec.pop("options", None)
        rec.pop("pitch", None)
        rec.pop("notes_digest", None)
        rec["pitch_hint"] = rt.pitch_hint
        notes_file = CachePaths(out).notes_file(rt.track_id)
        if lab.pitch:  # only a track with pitch labels has these keys (and a notes file)
            rec.update(pitch=lab.pitch, notes_digest=notes_digest(lab.pitch, lab.notes))
            atomic_write_parquet(notes_file, lab.notes)
        elif notes_file.exists():
            notes_file.unlink()
        if rt.outside:
            rec["outside"] = rt.outside
        options = cfg.options_of(ref.source)
        if options:
            rec["options"] = options
        atomic_write_parquet(CachePaths(out).activity_file(rt.track_id), lab.table)
        write_record(out, rt.track_id, rec)  # last: it vouches for everything above
        rec["status"] = status
        return rec
    except Exception as exc:  # noqa: BLE001
        return _failure(ref, "write", exc, cfg)


def run_track(ref: TrackRef, cfg: BuildConfig) -> dict:
    """read + validate -> harmonize -> label -> write for one track, as plain calls inside the
    flow's one ``process-track`` task run. A cached track skips all but the first step. Each
    step's wall time is in the result's ``step_s`` (reported, never written) and logged at debug."""
    step_s: dict[str, float] = {}

    def step(name: str, fn: Callable, *args):
        t0 = time.perf_counter()
        try:
            return fn(*args)
        finally:
            step_s[name] = round(time.perf_counter() - t0, 4)

    rt = step("read", read_validate, ref, cfg)
    if isinstance(rt, dict):
        result = rt
    else:
        harm = None if rt.audio_ok else step("harmonize", harmonize_track, rt, cfg)
        if isinstance(harm, dict):
            result = harm
        else:
            lab = step("label", label_track_step, rt, harm, cfg)
            result = lab if isinstance(lab, dict) else step("write", write_track, rt, harm, lab, cfg)
            del harm, lab
    result["pid"] = os.getpid()  # which worker ran it (reported, never written)
    result["step_s"] = step_s
    log.debug("%s:%s %s", ref.source, ref.native_id,
              " ".join(f"{k} {v:.2f}s" for k, v in step_s.items()))
    return result


# ----------------------------------------------------------------------------- labelling
def activity_table(track_id: str, conf: dict[str, np.ndarray], threshold: float,
                   exact: dict[str, np.ndarray] | None = None):
    """ACTIVITY_SCHEMA rows for the instruments in ``conf`` (or exact booleans in ``exact``)."""
    import pyarrow as pa

    inst, frames, active, confidence = [], [], [], []
    items = exact if exact is not None else conf
    for name, values in items.items():
        T = len(values)
        if exact is not None:
            a = np.asarray(values, dtype=bool)
            c = a.astype(np.float32)
        else:
            # 4 decimals, as MedleyDB's own .lab files: keeps the version stable across machines
            c = np.round(np.asarray(values, dtype=np.float64), 4).astype(np.float32)
            a = c >= threshold
        inst.extend([name] * T)
        frames.append(np.arange(T, dtype=np.int32))
        active.append(a)
        confidence.append(c)
    cat = (lambda xs, dt: np.concatenate(xs) if xs else np.zeros(0, dt))
    return pa.table({
        "track_id": pa.array([track_id] * len(inst), pa.string()),
        "instrument": pa.array(inst, pa.string()),
        "frame": pa.array(cat(frames, np.int32), pa.int32()),
        "active": pa.array(cat(active, bool), pa.bool_()),
        "confidence": pa.array(cat(confidence, np.float32), pa.float32()),
    }, schema=cf.ACTIVITY_SCHEMA)


def label_track(track: SourceTrack, track_id: str, instruments: dict[str, np.ndarray],
                source_stems: dict[str, list[str]], n_frames: int, cfg: BuildConfig,
                warnings: list[str]):
    """(method, activity table) for one track: exact notes > shipped .lab (if asked) > computed."""
    p = cfg.label_params
    if track.note_labels_path is not None:
        notes = act.read_note_labels(track.note_labels_path)
        exact = {}
        for inst, stems in source_stems.items():
            intervals = [iv for key in [*stems, inst] for iv in notes.get(key, [])]
            exact[inst] = act.intervals_to_frames(intervals, n_frames, cfg.hop, cfg.sample_rate)
        return "notes", activity_table(track_id, {}, p["threshold"], exact=exact)
    if cfg.use_medleydb_lab and track.activation_conf_path is not None:
        try:
            conf = act.confidence_from_lab(track.activation_conf_path, source_stems, n_frames,
                                           cfg.hop, cfg.sample_rate)
            return "medleydb_lab", activity_table(track_id, conf, p["threshold"])
        except ValueError as exc:
            warnings.append(f"activation .lab not used ({exc}); computed instead")
    conf = act.confidence_from_audio(instruments, cfg.hop, p, n_frames)
    return "activation_conf", activity_table(track_id, conf, p["threshold"])


# --------------------------------------------------------------------------------- writing
def _write_audio(ref: TrackRef, track: SourceTrack, track_id: str, shard: str, harm: HarmonizedTrack,
                 layout: cf.CorpusLayout, cfg: BuildConfig, dir_name: str) -> dict:
    sr = harm.sample_rate
    tdir = layout.track_dir(shard, dir_name)
    rendered = {s.stem_id: s.extra.get("render") or [] for s in track.stems}  # synthesized: records
    outputs: dict[str, int] = {}
    stems_rows = []
    keep = {"mixture.wav"}
    for inst, audio in harm.instruments.items():
        rel = layout.rel_audio(shard, dir_name, inst)
        digest, size = write_wav(layout.root / rel, audio, sr, "FLOAT", digest="sha256")
        outputs[rel] = size
        keep.add(f"{inst}.wav")
        stems_rows.append({
            "track_id": track_id, "instrument": inst, "path": rel,
            "sha256": digest, "num_samples": int(audio.shape[0]),
            "source_stems": list(harm.source_stems[inst]),
            "source_labels": list(harm.source_labels[inst]),
            "annotated": bool(harm.annotated[inst]), "rms_db": _round(rms_db(audio)),
            "synth_render": [{"source_stem": sid, **r} for sid in harm.source_stems[inst]
                             for r in rendered.get(sid, [])] or None,
        })
    mix_rel = layout.rel_audio(shard, dir_name, "mixture")
    mix_digest, outputs[mix_rel] = write_wav(layout.root / mix_rel, harm.mixture, sr, "FLOAT", digest="sha256")
    # an instrument dropped since the last build (label map edit) must not linger on disk
    for old in tdir.glob("*.wav"):
        if old.name not in keep:
            old.unlink()
    n = harm.num_samples
    track_row = {
        "track_id": track_id, "source": ref.source, "native_id": ref.native_id,
        "artist": track.artist or "", "title": track.title or "",
        "shard": shard, "sample_rate": sr, "num_samples": n,
        "duration_s": _round(n / sr, 6), "num_frames": cf.num_frames(n, cfg.hop), "hop": cfg.hop,
        "mixture_path": mix_rel, "mixture_is_sum": harm.mixture_is_sum,
        "mixture_residual_db": None if harm.mixture_is_sum else _round(harm.mixture_residual_db),
        "mixture_sha256": mix_digest,
        "fingerprint": audio_fingerprint(harm.mixture, sr),
        "instruments": list(harm.instruments),
        "unknown_instruments": list(harm.unknown_instruments),
        "activity_method": "", "input_digest": "", "warnings": list(harm.warnings),
    }
    return {"track": track_row, "stems": stems_rows, "outputs": outputs}
