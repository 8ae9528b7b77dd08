"""The corpus build: a Prefect 3 flow, ``build_corpus``, that reads like the data flow.

    discover (per source) -> per track: read + validate -> harmonize -> label -> write
    -> split guard -> tables (tracks, stems, activity shards, rejects) -> manifest

Format: :mod:`iass.pipelines.corpus_format` (the one module writer and readers share).

Caching (our own keys; Prefect's result cache is off so nothing is stored twice):

* ``input_digest`` (also a column of tracks.parquet) = hash of (source, native id, the content
  hash of every source file of the track, sample rate, taxonomy sha256, the source's label-map
  sha256, BUILD_VERSION). File content hashes are FULL xxh3-128 hashes of the bytes; a per-track
  stat cache (relative path, size, mtime_ns -> hash) lets an unchanged file skip re-hashing, so
  the digest is content-based (same on any machine) while a no-change rebuild only stats files.
* ``label_key`` = hash of (input_digest, label method, label params, hop, LABEL_VERSION).
* Per track, ``<out>/.cache/tracks/<track_id>.json`` records both keys, the table rows and the
  output sizes; ``<out>/.cache/activity/<track_id>.parquet`` its activity rows. Same input_digest
  and outputs present: no audio work. Same input_digest, other label_key: the labels are
  recomputed from the corpus' own WAVs (no source decode, no audio rewrite). An activity shard is
  rewritten only when the digest of its members changes (stored in the Parquet metadata).
* Records are written last, after the audio and activity they describe (all atomic), so a build
  killed at any point resumes where it stopped and ends with the same corpus version.

Corpus version = sha256 over the canonical JSON of the table rows (audio sha256s included), the
activity content digests, the rejects, the format version and the params; no time, no absolute
path. WAV bytes are deterministic (written by :func:`iass.io.write_wav`, without libsndfile's
timestamped PEAK chunk).
"""
from __future__ import annotations

import os

from iass import REPO_ROOT

# Prefect reads these at import: a project-local home (SQLite of the embedded server), no
# telemetry (it errors offline), quiet logs. A user's own settings win.
os.environ.setdefault("PREFECT_HOME", str(REPO_ROOT / ".prefect"))
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")  # a loaded 2-core CI box needs >20 s

import contextlib  # noqa: E402
import errno  # noqa: E402
import json  # noqa: E402
import shutil  # noqa: E402
import socket  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any, Iterable  # noqa: E402

import numpy as np  # noqa: E402
from prefect import flow, task  # noqa: E402
from prefect.cache_policies import NO_CACHE  # noqa: E402

from iass import __version__  # noqa: E402
from iass.io import (  # noqa: E402
    atomic_link,
    atomic_path,
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_parquet,
    clean_temp_files,
    file_digest,
    stable_hash,
    write_wav,
)
from iass.pipelines import activity as act  # noqa: E402
from iass.pipelines import corpus_format as cf  # noqa: E402
from iass.pipelines.corpus_check import activity_digest, corpus_version  # noqa: E402
from iass.pipelines.harmonize import HarmonizedTrack, harmonize, rms_db  # noqa: E402
from iass.pipelines.sources.base import SourceTrack, TrackError, TrackRef, get_adapter  # noqa: E402
from iass.pipelines.splits import SPLITS, SplitTrack, assign_splits, audio_fingerprint  # noqa: E402

#: bump when harmonizing / writing changes what lands on disk (invalidates the audio cache)
BUILD_VERSION = "2"  # 2: content-keyed audio folders, versioned table snapshots
#: bump when the labelling code changes its output (invalidates labels only)
LABEL_VERSION = "1"
CACHE_DIR = ".cache"
LOCK_NAME = ".build.lock"
#: published table snapshots, one folder per corpus version (see publish_tables)
SNAPSHOT_DIR = ".versions"
#: write errors that mean the OUTPUT is at fault (full disk, quota, size cap, read-only), not a track
DISK_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS}
SHARD_DIGEST_KEY = b"iass_shard_digest"


class BuildError(RuntimeError):
    """The build as a whole cannot go on (bad params, a source root missing, --strict, a lock)."""


# ---------------------------------------------------------------------------------- config
@dataclass(frozen=True)
class BuildConfig:
    out: str
    sources: tuple[tuple[str, str], ...]      # (name, root) pairs
    sample_rate: int = cf.SAMPLE_RATE
    hop: int = 1024
    num_shards: int = 16
    strict: bool = False
    use_medleydb_lab: bool = False
    labels: tuple[tuple[str, Any], ...] = ()   # label params (activity.label_params)
    splits: tuple[tuple[str, Any], ...] = ()
    mixture_tolerance_db: float = -30.0
    runner: str = "threads"
    workers: int = 2
    dask_address: str | None = None
    progress: bool = True

    @property
    def label_params(self) -> dict:
        return act.label_params(dict(self.labels))

    @property
    def split_params(self) -> dict:
        return dict(self.splits)

    def public_params(self) -> dict:
        """Params recorded in the manifest and hashed into the version (no paths, no runner)."""
        sp = self.split_params
        return {
            "sample_rate": self.sample_rate, "hop": self.hop, "num_shards": self.num_shards,
            "labels": {"method": "activation_conf", "use_medleydb_lab": self.use_medleydb_lab,
                       **self.label_params},
            "splits": {"seed": int(sp.get("seed", 0)),
                       "valid_fraction": float(sp.get("valid_fraction", 0.15)),
                       "test_fraction": float(sp.get("test_fraction", 0.2)),
                       "declared": sp.get("declared") or {},
                       "song_level_artists": list(sp.get("song_level_artists") or [])},
            "mixture_tolerance_db": self.mixture_tolerance_db,
        }


def config_from_params(params: dict, sources: dict[str, str] | None = None, out: str | None = None,
                       strict: bool | None = None, runner: str | None = None,
                       dask_address: str | None = None, workers: int | None = None,
                       progress: bool = True, base_dir: str | Path | None = None) -> BuildConfig:
    """BuildConfig from params.yaml sections ``sources`` and ``corpus`` plus CLI overrides.

    Relative paths written in params.yaml resolve against ``base_dir`` (the params file's
    folder), so the build works from any directory; paths given as arguments stay as given."""
    c = dict(params.get("corpus") or {})

    def from_params(path: str) -> str:
        return str(Path(base_dir) / path) if base_dir is not None and not Path(path).is_absolute() \
            else str(path)

    if sources:
        srcs = dict(sources)
    else:
        srcs = {k: from_params(str(v)) for k, v in (params.get("sources") or {}).items()}
    if not srcs:
        raise BuildError("no sources: set params.yaml `sources:` or pass --source NAME=PATH")
    labels = dict(c.get("labels") or {})
    method = labels.pop("method", "activation_conf")
    if method != "activation_conf":
        raise BuildError(f"corpus.labels.method {method!r}: only 'activation_conf' is implemented")
    use_lab = bool(labels.pop("use_medleydb_lab", False))
    runner = runner or c.get("runner", "threads")
    if runner not in ("threads", "processes", "dask"):
        raise BuildError(f"runner {runner!r}: expected threads, processes or dask")
    hop = int(c.get("hop", 1024))
    stft = params.get("stft") or {}
    if stft.get("hop") is not None and int(stft["hop"]) != hop:
        print(f"warning: corpus.hop {hop} != stft.hop {stft['hop']}: labels will not align with "
              f"the model's frames", file=sys.stderr)
    return BuildConfig(
        out=str(out) if out else from_params(str(c.get("out", "datasets/corpus"))),
        sources=tuple(sorted((str(k), str(v)) for k, v in srcs.items())),
        sample_rate=int(c.get("sample_rate", cf.SAMPLE_RATE)),
        hop=hop,
        num_shards=int(c.get("num_shards", 16)),
        strict=bool(c.get("strict", False) if strict is None else strict),
        use_medleydb_lab=use_lab,
        labels=tuple(sorted(act.label_params(labels).items())),
        splits=tuple(sorted((c.get("splits") or {}).items())),
        mixture_tolerance_db=float(c.get("mixture_tolerance_db", -30.0)),
        runner=runner,
        workers=int(workers if workers is not None else c.get("workers", 2)) or (os.cpu_count() or 1),
        dask_address=dask_address,
        progress=progress,
    )


# ------------------------------------------------------------------------------------ lock
@contextlib.contextmanager
def build_lock(out: Path):
    """Refuse a second build into the same directory; a stale lock of a dead local pid is taken over."""
    out.mkdir(parents=True, exist_ok=True)
    path = out / LOCK_NAME
    me = f"{os.getpid()} {socket.gethostname()}"
    for _ in range(2):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            try:
                pid_s, _, host = path.read_text().strip().partition(" ")
                pid = int(pid_s)
            except (OSError, ValueError):
                pid, host = -1, ""
            if host == socket.gethostname() and not _pid_alive(pid):
                print(f"warning: removing stale lock {path} of a build (pid {pid}) that is gone",
                      file=sys.stderr)
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
                continue
            raise BuildError(
                f"{path}: another corpus build (pid {pid} on {host or '?'}) is writing into {out}; "
                f"wait for it to finish, or delete the lock if that build is gone") from None
        try:
            with os.fdopen(fd, "w") as fh:
                fh.write(me)
        except OSError as exc:  # a full disk: leave no empty lock that would refuse every build
            with contextlib.suppress(OSError):
                path.unlink()
            if is_disk_error(exc):
                raise BuildError(disk_error_message(out, exc)) from None
            raise
        break
    try:
        yield path
    finally:
        with contextlib.suppress(FileNotFoundError):
            if path.read_text().strip() == me:
                path.unlink()


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# ------------------------------------------------------------------------- small helpers
def track_source_files(ref: TrackRef, track: SourceTrack, use_lab: bool) -> list[Path]:
    files = {Path(s.path) for s in track.stems}
    for p in (track.mixture_path, track.note_labels_path,
              track.activation_conf_path if use_lab else None):
        if p is not None:
            files.add(Path(p))
    if Path(ref.location).is_file():
        files.add(Path(ref.location))
    return sorted(files)


def _rel(root: Path, path: Path) -> str:
    try:
        return Path(path).resolve().relative_to(Path(root).resolve()).as_posix()
    except ValueError:
        return Path(path).name


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


class CachePaths:
    def __init__(self, out: Path):
        self.root = Path(out) / CACHE_DIR
        self.tracks = self.root / "tracks"
        self.activity = self.root / "activity"

    def record(self, track_id: str) -> Path:
        return self.tracks / f"{track_id}.json"

    def activity_file(self, track_id: str) -> Path:
        return self.activity / f"{track_id}.parquet"


def load_record(out: Path, track_id: str) -> dict | None:
    p = CachePaths(out).record(track_id)
    try:
        return json.loads(p.read_text())
    except (OSError, ValueError):
        return None


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


# ------------------------------------------------------------------------------- the tasks
@task(name="discover", cache_policy=NO_CACHE, persist_result=False)
def discover_source(name: str, root: str) -> list[TrackRef]:
    path = Path(root)
    if not path.is_dir():
        raise BuildError(f"source {name}: {root} is not a directory")
    return list(get_adapter(name).discover(path))


def _is_utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # undecodable bytes of a file name (surrogateescape)
        return False
    return True


def _printable(text: str) -> str:
    """A table-safe form of a name that may hold undecodable file-name bytes (shown as U+FFFD)."""
    return text if _is_utf8(text) else \
        text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def _reject(ref: TrackRef, stage: str, path: str, reason: str, cfg: BuildConfig) -> dict:
    roots = cfg.sources
    one_line = " ".join(_scrub(_printable(str(reason)), roots).split())
    return {"status": "rejected", "reject": {
        "source": ref.source, "native_id": _printable(ref.native_id),
        "path": _scrub(_printable(str(path)), roots), "stage": stage, "reason": one_line}}


@task(name="process-track", cache_policy=NO_CACHE, persist_result=False, retries=0)
def process_track(ref: TrackRef, cfg: BuildConfig) -> dict:
    """read + validate -> harmonize -> label -> write, for one track (cached; see module doc)."""
    return process_track_impl(ref, cfg)


def process_track_impl(ref: TrackRef, cfg: BuildConfig) -> dict:
    result = _process_track(ref, cfg)
    result["pid"] = os.getpid()  # which worker ran it (reported, never written)
    return result


def _process_track(ref: TrackRef, cfg: BuildConfig) -> dict:
    out = Path(cfg.out)
    track_id = cf.make_track_id(ref.source, ref.native_id)
    shard = cf.shard_of(track_id, cfg.num_shards)
    layout = cf.CorpusLayout(out)
    cache = CachePaths(out)
    stage = "read"
    try:
        adapter = get_adapter(ref.source)
        track = adapter.read(ref)
        stage = "validate"
        problems = adapter.validate(track)
        if problems:
            return _reject(ref, stage, problems[0].split(": ")[0] if ": " in problems[0]
                           else ref.location, "; ".join(problems), cfg)
        from iass.pipelines.taxonomy import load_taxonomy

        taxonomy = load_taxonomy()
        prev = load_record(out, track_id)
        prev_files = (prev or {}).get("files", {})
        files = {}
        for p in track_source_files(ref, track, cfg.use_medleydb_lab):
            st = p.stat()
            rel = _rel(ref.root, p)
            old = prev_files.get(rel)
            digest = old[2] if old and old[0] == st.st_size and old[1] == st.st_mtime_ns else \
                file_digest(p, "xxh3_128")
            files[rel] = [st.st_size, st.st_mtime_ns, digest]
        input_digest = _input_digest(ref, {k: v[2] for k, v in files.items()}, cfg)
        method_hint = ("notes" if track.note_labels_path is not None else
                       "medleydb_lab" if cfg.use_medleydb_lab and track.activation_conf_path else
                       "activation_conf")
        label_key = _label_key(input_digest, method_hint, cfg)
        audio_ok = (prev is not None and prev.get("input_digest") == input_digest
                    and prev.get("shard") == shard and _outputs_ok(out, prev.get("outputs", {})))
        if audio_ok and prev.get("label_key") == label_key and cache.activity_file(track_id).exists():
            if prev.get("files") != files or prev.get("dir_mtime_ns") != _dir_mtime(ref):
                # only mtimes moved (touch, copy): refresh the stat cache
                prev.update(files=files, dir_mtime_ns=_dir_mtime(ref))
                atomic_write_json(cache.record(track_id), prev)
            prev["status"] = "cached"
            return prev
        if audio_ok:
            stage = "label"
            rec = dict(prev)
            rows = rec["track"]
            instruments = {s["instrument"]: _read_wav(out / s["path"]) for s in rec["stems"]}
            stems_of = {s["instrument"]: list(s["source_stems"]) for s in rec["stems"]}
            warnings = [w for w in rows["warnings"] if not w.startswith("activation .lab not used")]
            n_frames = cf.num_frames(int(rows["num_samples"]), cfg.hop)  # the hop may have changed
            method, table = label_track(track, track_id, instruments, stems_of, n_frames, cfg,
                                        warnings)
            del instruments
            rows.update(activity_method=method, hop=cfg.hop, num_frames=n_frames, warnings=warnings)
            status = "relabelled"
        else:
            stage = "load"
            audio = adapter.load(track, cfg.sample_rate)
            stage = "harmonize"
            harm = harmonize(track, audio, taxonomy, cfg.mixture_tolerance_db)
            del audio
            stage = "write"
            rec, instruments, stems_of = _write_audio(ref, track, track_id, shard, harm, layout, cfg,
                                                      audio_dir_name(track_id, input_digest))
            stage = "label"
            warnings = list(rec["track"]["warnings"])
            method, table = label_track(track, track_id, harm.instruments, stems_of,
                                        int(rec["track"]["num_frames"]), cfg, warnings)
            rec["track"].update(activity_method=method, warnings=warnings)
            del harm, instruments
            status = "built"
        stage = "write"
        rec["track"]["input_digest"] = input_digest
        rec["track"]["warnings"] = [_scrub(w, cfg.sources) for w in rec["track"]["warnings"]]
        rec.update(track_id=track_id, source=ref.source, native_id=ref.native_id, shard=shard,
                   input_digest=input_digest, label_key=label_key, files=files,
                   method_hint=method_hint, dir_mtime_ns=_dir_mtime(ref),
                   declared_split=track.split, activity_digest=activity_digest(table),
                   activity_rows=table.num_rows)
        atomic_write_parquet(cache.activity_file(track_id), table)
        atomic_write_json(cache.record(track_id), rec)  # last: it vouches for everything above
        rec["status"] = status
        return rec
    except TrackError as exc:
        return _reject(ref, stage, exc.path, exc.reason, cfg)
    except Exception as exc:  # noqa: BLE001 - one bad track must not stop the others
        # (a corrupt file the adapter did not anticipate: libsndfile raises RuntimeError, ...)
        # ... but a full disk is not the track's fault: quarantining it would publish a corpus
        # with tracks silently missing. Stop the build; the published version stays as it was.
        if is_disk_error(exc):  # returned, not raised: the flow stops with this one line
            return {"status": "failed", "error": disk_error_message(out, exc)}
        path = getattr(exc, "filename", None) or ref.location
        return _reject(ref, stage, str(path), f"{type(exc).__name__}: {' '.join(str(exc).split())}", cfg)


def is_disk_error(exc: BaseException) -> bool:
    """A write failed because of the output (full disk, quota, file size cap, read-only)."""
    if isinstance(exc, OSError) and exc.errno in DISK_ERRNOS:
        return True
    text = str(exc)  # pyarrow's IO errors carry the strerror but not always the errno
    return isinstance(exc, OSError) and any(os.strerror(e) in text for e in DISK_ERRNOS)


def disk_error_message(out: Path, exc: BaseException) -> str:
    what = getattr(exc, "strerror", None) or " ".join(str(exc).split())
    name = getattr(exc, "filename", None)
    return (f"cannot write the corpus under {out}: {what}"
            f"{f' ({name})' if name else ''}; the build stopped and the published corpus version "
            f"(manifest.json) is unchanged; free space and run the build again to resume")


def _input_digest(ref: TrackRef, file_hashes: dict[str, str], cfg: BuildConfig) -> str:
    """The audio cache key: source file contents + everything that shapes the written audio."""
    from iass.pipelines.taxonomy import label_map_hash, load_taxonomy

    return stable_hash({
        "source": ref.source, "native_id": ref.native_id, "files": dict(sorted(file_hashes.items())),
        "sample_rate": cfg.sample_rate, "taxonomy": load_taxonomy().sha256,
        "label_map": label_map_hash(ref.source), "build": BUILD_VERSION,
        "mixture_tolerance_db": cfg.mixture_tolerance_db,
    })


def _label_key(input_digest: str, method_hint: str, cfg: BuildConfig) -> str:
    # exact note labels depend on the hop only, not on the activation-confidence params
    return stable_hash({"input": input_digest, "method": method_hint,
                        "params": None if method_hint == "notes" else cfg.label_params,
                        "hop": cfg.hop, "labels": LABEL_VERSION})


def _dir_mtime(ref: TrackRef) -> int:
    loc = Path(ref.location)
    try:
        return (loc if loc.is_dir() else loc.parent).stat().st_mtime_ns
    except OSError:
        return -1


def cached_record(ref: TrackRef, cfg: BuildConfig) -> dict | None:
    """The fast no-change path, run in the flow itself (no task, no metadata parsing).

    Valid when every source file the record lists has the same size and mtime, the track
    folder's mtime is unchanged (no file added or removed beside them), the digests computed
    from the recorded content hashes and the current params match, and the outputs exist."""
    out = Path(cfg.out)
    track_id = cf.make_track_id(ref.source, ref.native_id)
    prev = load_record(out, track_id)
    if not prev or "method_hint" not in prev:
        return None
    root = Path(ref.root)
    try:
        for rel, (size, mtime, _) in prev["files"].items():
            st = (root / rel).stat()
            if st.st_size != size or st.st_mtime_ns != mtime:
                return None
        input_digest = _input_digest(ref, {k: v[2] for k, v in prev["files"].items()}, cfg)
    except (OSError, ValueError):
        return None
    if (prev.get("dir_mtime_ns") != _dir_mtime(ref) or prev["input_digest"] != input_digest
            or prev["shard"] != cf.shard_of(track_id, cfg.num_shards)
            or prev["label_key"] != _label_key(input_digest, prev["method_hint"], cfg)
            or not _outputs_ok(out, prev.get("outputs", {}))
            or not CachePaths(out).activity_file(track_id).exists()):
        return None
    prev.update(status="cached", pid=os.getpid())
    return prev


def _read_wav(path: Path) -> np.ndarray:
    import soundfile as sf

    data, _ = sf.read(str(path), dtype="float32", always_2d=True)
    return data


def _outputs_ok(out: Path, outputs: dict[str, int]) -> bool:
    if not outputs:
        return False
    for rel, size in outputs.items():
        try:
            if (out / rel).stat().st_size != size:
                return False
        except OSError:
            return False
    return True


def audio_dir_name(track_id: str, input_digest: str) -> str:
    """The folder of a track's WAVs: the track id plus a key of its source content, so audio that
    changes goes to a new folder and a reader of the previous version keeps reading the old one
    (deterministic: the same inputs give the same folder on any machine)."""
    return f"{track_id}.{input_digest[:8]}"


def _write_audio(ref: TrackRef, track: SourceTrack, track_id: str, shard: str, harm: HarmonizedTrack,
                 layout: cf.CorpusLayout, cfg: BuildConfig, dir_name: str):
    sr = harm.sample_rate
    tdir = layout.track_dir(shard, dir_name)
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
    rec = {"track": track_row, "stems": stems_rows, "outputs": outputs}
    return rec, harm.instruments, harm.source_stems


# ------------------------------------------------------------------------- tables + manifest
def _runner(cfg: BuildConfig):
    if cfg.runner == "threads":
        from prefect.task_runners import ThreadPoolTaskRunner

        return ThreadPoolTaskRunner(max_workers=cfg.workers)
    if cfg.runner == "processes":
        from prefect.task_runners import ProcessPoolTaskRunner

        return ProcessPoolTaskRunner(max_workers=cfg.workers)
    from prefect_dask import DaskTaskRunner

    if cfg.dask_address:
        return DaskTaskRunner(address=cfg.dask_address)
    return DaskTaskRunner(cluster_kwargs={"n_workers": cfg.workers, "threads_per_worker": 1,
                                          "processes": True, "dashboard_address": None})


def _table(rows: list[dict], schema):
    import pyarrow as pa

    return pa.Table.from_pylist(rows, schema=schema)


def write_activity_shards(out: Path, records: list[dict], num_shards: int,
                          dest: Path | None = None, reuse: Path | None = None) -> dict[str, int]:
    """Assemble activity/part-<shard>.parquet under ``dest`` (a snapshot; default ``out``) from the
    per-track files; a shard whose members are unchanged is kept (``dest`` == ``reuse``) or hard
    linked from the previous snapshot ``reuse``, never rewritten."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    layout = cf.CorpusLayout(out if dest is None else dest)
    previous = cf.CorpusLayout(reuse) if reuse is not None else layout
    cache = CachePaths(out)
    by_shard: dict[str, list[dict]] = {}
    for r in records:
        by_shard.setdefault(r["shard"], []).append(r)
    stats = {"written": 0, "kept": 0, "removed": 0}
    for shard, recs in sorted(by_shard.items()):
        recs = sorted(recs, key=lambda r: r["track_id"])
        digest = stable_hash([(r["track_id"], r["activity_digest"]) for r in recs]).encode()
        path = layout.activity_part(shard)
        kept = False
        for old in dict.fromkeys((path, previous.activity_part(shard))):
            try:
                if old.exists() and (pq.read_schema(old).metadata or {}).get(SHARD_DIGEST_KEY) == digest:
                    if old != path:
                        atomic_link(old, path)
                    kept = True
                    break
            except (OSError, pa.ArrowInvalid):
                pass
        if kept:
            stats["kept"] += 1
            continue
        tables = [pq.read_table(cache.activity_file(r["track_id"])) for r in recs]
        table = pa.concat_tables(tables).cast(cf.ACTIVITY_SCHEMA)
        table = table.replace_schema_metadata({SHARD_DIGEST_KEY: digest})
        with atomic_path(path) as tmp:
            pq.write_table(table, str(tmp), compression="zstd")
        stats["written"] += 1
    for p in layout.activity_dir.glob("part-*.parquet") if layout.activity_dir.exists() else []:
        if p.stem.removeprefix("part-") not in by_shard:
            p.unlink()
            stats["removed"] += 1
    return stats


def _snapshot_layout(out: Path, manifest: dict | None) -> cf.CorpusLayout | None:
    """Where the tables of a published manifest live (the root itself for older corpora)."""
    if not manifest:
        return None
    snap = manifest.get("snapshot")
    return cf.CorpusLayout(out / snap) if snap else cf.CorpusLayout(out)


def _table_files(layout: cf.CorpusLayout, shards: Iterable[str]) -> list[Path]:
    return [layout.tracks, layout.stems, layout.rejects, layout.taxonomy,
            *(layout.activity_part(s) for s in sorted(set(shards)))]


def mirror_snapshot(out: Path, snap: cf.CorpusLayout, shards: Iterable[str]) -> None:
    """Make the root tables (tracks.parquet, activity/part-*, ...) hard links to the published
    snapshot, for tools that read the root directly; readers of :class:`Corpus` use the snapshot
    named in manifest.json, so they never see this step half done."""
    root = cf.CorpusLayout(out)
    shards = set(shards)
    for src in _table_files(snap, shards):
        dst = root.root / src.relative_to(snap.root)
        try:
            if os.path.samefile(src, dst):
                continue
        except OSError:
            pass
        atomic_link(src, dst)
    if root.activity_dir.exists():
        for p in root.activity_dir.glob("part-*.parquet"):
            if p.stem.removeprefix("part-") not in shards:
                p.unlink()


def _snapshot_tracks(layout: cf.CorpusLayout | None) -> set[tuple[str, str]]:
    """(shard, audio folder) of every track of a published version (its audio must stay readable)."""
    import pyarrow.parquet as pq

    if layout is None:
        return set()
    try:
        t = pq.read_table(layout.tracks, columns=["shard", "mixture_path"])
    except Exception:  # noqa: BLE001 - a legacy or damaged prior: nothing to protect
        return set()
    return {(shard, Path(mix).parent.name)
            for shard, mix in zip(t.column("shard").to_pylist(), t.column("mixture_path").to_pylist())}


def _prune(out: Path, keep_ids: set[str], keep_dirs: set[tuple[str, str]],
           keep_snapshots: set[str]) -> None:
    """Remove audio of tracks in neither the new nor the previous version, caches of tracks that
    are gone, and snapshots other than ``keep_snapshots``. The previous version's audio and tables
    stay one build longer, so a reader that opened it during this build reads it to the end."""
    layout = cf.CorpusLayout(out)
    if layout.audio_dir.exists():
        for shard_dir in layout.audio_dir.iterdir():
            if not shard_dir.is_dir():
                continue
            for tdir in shard_dir.iterdir():
                if (shard_dir.name, tdir.name) not in keep_dirs:
                    shutil.rmtree(tdir, ignore_errors=True)
            if not any(shard_dir.iterdir()):
                shard_dir.rmdir()
    cache = CachePaths(out)
    for folder, suffix in ((cache.tracks, ".json"), (cache.activity, ".parquet")):
        if folder.exists():
            for p in folder.glob(f"*{suffix}"):
                if p.name[: -len(suffix)] not in keep_ids:
                    p.unlink()
    snaps = out / SNAPSHOT_DIR
    if snaps.exists():
        for d in snaps.iterdir():
            if f"{SNAPSHOT_DIR}/{d.name}" not in keep_snapshots:
                shutil.rmtree(d, ignore_errors=True)


@task(name="split-guard", cache_policy=NO_CACHE, persist_result=False)
def split_guard(records: list[dict], split_params: dict):
    declared = split_params.get("declared") or {}
    items = []
    for r in records:
        t = r["track"]
        d = (declared.get(r["source"]) or {}).get(r["native_id"]) or r.get("declared_split")
        items.append(SplitTrack(track_id=r["track_id"], source=r["source"], native_id=r["native_id"],
                                artist=t["artist"], title=t["title"], declared=d,
                                fingerprint=t["fingerprint"]))
    try:
        return _assign(items, split_params)
    except ValueError as exc:
        raise BuildError(f"split guard: {exc}") from None


def _assign(items, split_params):
    return assign_splits(items, seed=int(split_params.get("seed", 0)),
                         valid_fraction=float(split_params.get("valid_fraction", 0.15)),
                         test_fraction=float(split_params.get("test_fraction", 0.2)),
                         song_level_artists=split_params.get("song_level_artists") or ())


@flow(name="build_corpus", log_prints=False, persist_result=False, validate_parameters=False)
def build_corpus(cfg: BuildConfig, lock_held: bool = False):
    """Build (or update) the corpus under ``cfg.out``; returns the manifest plus run statistics.

    ``--strict`` with rejects ends the flow run Failed (a one-line message, no traceback)."""
    from prefect.states import Failed

    try:
        return _build(cfg, lock_held)
    except BuildError as exc:  # a Failed state with one line, not a logged traceback
        return Failed(message=str(exc))
    except OSError as exc:
        if is_disk_error(exc):
            return Failed(message=disk_error_message(Path(cfg.out), exc))
        raise


def _build(cfg: BuildConfig, lock_held: bool = False):
    from prefect.futures import as_completed
    from tqdm import tqdm

    from iass.pipelines.taxonomy import label_map_hash, load_taxonomy

    t0 = time.perf_counter()
    out = Path(cfg.out)
    layout = cf.CorpusLayout(out)
    with contextlib.nullcontext() if lock_held else build_lock(out):
        clean_temp_files(out)
        refs: list[TrackRef] = []
        for name, root in cfg.sources:
            refs.extend(discover_source(name, root))
        # the same native id twice in one source (MUSDB's train/ and test/ both holding a song):
        # which copy is right is unknowable, so every copy is quarantined, the rest goes on
        by_id: dict[str, list[TrackRef]] = {}
        results: list[dict] = []
        for r in refs:
            if not _is_utf8(r.native_id):  # a file name the tables (UTF-8) cannot hold
                results.append(_reject(r, "discover", str(r.location),
                                       "file name is not valid UTF-8: rename the track", cfg))
                results[-1]["pid"] = os.getpid()
                continue
            by_id.setdefault(cf.make_track_id(r.source, r.native_id), []).append(r)
        refs = []
        for tid, group in by_id.items():
            if len(group) == 1:
                refs.append(group[0])
                continue
            where = ", ".join(_scrub(str(g.location), cfg.sources) for g in group)
            for g in group:
                results.append(_reject(g, "discover", str(g.location),
                                       f"duplicate track id {tid}: {len(group)} tracks of {g.source} "
                                       f"have the native id {g.native_id!r} ({where})", cfg))
                results[-1]["pid"] = os.getpid()
        n_dup = len(results)
        todo = []
        for r in refs:  # unchanged tracks are settled here: no task, no audio
            hit = cached_record(r, cfg)
            if hit is None:
                todo.append(r)
            else:
                results.append(hit)
        # the flow's task runner (threads | processes | dask) runs these; see run_build
        futures = [process_track.with_options(task_run_name=f"track-{r.source}-{r.native_id}"[:100])
                   .submit(r, cfg) for r in todo]
        bar = tqdm(total=len(refs) + n_dup, initial=len(results), desc="corpus", unit="track",
                   disable=not cfg.progress, file=sys.stderr)
        for fut in as_completed(futures):
            res = fut.result()
            if res["status"] == "failed":  # the output, not the track, is at fault (full disk)
                raise BuildError(res["error"])
            results.append(res)
            bar.update(1)
        bar.close()
        records = sorted((r for r in results if r["status"] != "rejected"), key=lambda r: r["track_id"])
        rejects = sorted((r["reject"] for r in results if r["status"] == "rejected"),
                         key=lambda r: (r["source"], r["native_id"], r["stage"], r["path"]))
        for rj in rejects:  # one line each: what was quarantined and why (also rejects.parquet)
            print(f"rejected {rj['source']}:{rj['native_id']} ({rj['stage']}) {rj['path']}: "
                  f"{rj['reason']}", file=sys.stderr)
        if cfg.strict and rejects:
            from prefect.states import Failed

            first = rejects[0]
            return Failed(message=(
                f"--strict: {len(rejects)} track(s) rejected; first: {first['source']}:"
                f"{first['native_id']} ({first['stage']}) {first['path']}: {first['reason']}"))
        split = split_guard(records, cfg.split_params)
        tracks_rows, stems_rows = [], []
        for r in records:
            row = dict(r["track"])
            row["split"] = split.split[r["track_id"]]
            row["song_key"] = split.song_key[r["track_id"]]
            row["hop"] = cfg.hop
            tracks_rows.append({k: row.get(k) for k in cf.TRACKS_SCHEMA.names})
            stems_rows.extend(r["stems"])
        stems_rows.sort(key=lambda s: (s["track_id"], s["instrument"]))
        params = cfg.public_params()
        version = corpus_version(tracks_rows, stems_rows,
                                 [(r["track_id"], r["activity_digest"]) for r in records],
                                 rejects, params)
        taxonomy = load_taxonomy()
        sources_used = sorted({name for name, _ in cfg.sources})
        by_split = {s: sum(1 for t in tracks_rows if t["split"] == s) for s in SPLITS}
        by_source = {s: sum(1 for t in tracks_rows if t["source"] == s) for s in sources_used}
        manifest = {
            "format_version": cf.FORMAT_VERSION,
            "corpus_version": version,
            "code_version": {"iass": __version__, "build": BUILD_VERSION, "labels": LABEL_VERSION},
            "params": params,
            "taxonomy": {"version": taxonomy.version, "sha256": taxonomy.sha256},
            "label_maps": {s: label_map_hash(s) for s in sources_used},
            "sources": sources_used,
            "counts": {
                "tracks": len(tracks_rows), "rejects": len(rejects), "stems": len(stems_rows),
                "activity_rows": int(sum(r["activity_rows"] for r in records)),
                "hours": round(sum(t["duration_s"] for t in tracks_rows) / 3600.0, 6),
                "by_split": by_split, "by_source": by_source,
            },
            "duplicates": split.duplicates,
        }
        stats = {"built": 0, "cached": 0, "relabelled": 0, "rejected": len(rejects)}
        for r in records:
            stats[r["status"]] = stats.get(r["status"], 0) + 1
        # Publishing: the tables go into a snapshot folder of this version, then manifest.json
        # (naming the snapshot) is replaced in one rename: the commit point. A reader keys off the
        # manifest it opened, so it sees the old version or the new one, never a mix.
        snap_rel = f"{SNAPSHOT_DIR}/{version[:16]}"
        manifest["snapshot"] = snap_rel
        snap = cf.CorpusLayout(out / snap_rel)
        shard_names = {r["shard"] for r in records}
        prior = None
        with contextlib.suppress(OSError, ValueError):
            prior = json.loads(layout.manifest.read_text())
        prior_layout = _snapshot_layout(out, prior)
        unchanged = (prior == manifest and all(p.exists() for p in _table_files(snap, shard_names)))
        shards = {"written": 0, "kept": 0, "removed": 0}
        if not unchanged:
            shards = write_activity_shards(out, records, cfg.num_shards, dest=snap.root,
                                           reuse=prior_layout.root if prior_layout else None)
            atomic_write_parquet(snap.tracks, _table(tracks_rows, cf.TRACKS_SCHEMA))
            atomic_write_parquet(snap.stems, _table(stems_rows, cf.STEMS_SCHEMA))
            atomic_write_parquet(snap.rejects, _table(rejects, cf.REJECTS_SCHEMA))
            atomic_write_bytes(snap.taxonomy, Path(taxonomy.path).read_bytes())
            atomic_write_json(snap.manifest, manifest)
            atomic_write_json(layout.manifest, manifest)  # the commit: a manifest means a whole corpus
        mirror_snapshot(out, snap, shard_names)
        keep_dirs = {(r["shard"], Path(r["track"]["mixture_path"]).parent.name) for r in records}
        keep_snaps = {snap_rel}
        if prior and prior.get("snapshot") and prior != manifest:
            keep_dirs |= _snapshot_tracks(prior_layout)
            keep_snaps.add(prior["snapshot"])
        _prune(out, {r["track_id"] for r in records}, keep_dirs, keep_snaps)
        elapsed = time.perf_counter() - t0
        summary = (f"corpus {version[:12]} -> {out}: {len(tracks_rows)} tracks "
                   f"({stats['built']} built, {stats['cached']} cached, {stats['relabelled']} "
                   f"relabelled), {len(rejects)} rejected, {manifest['counts']['hours']:.2f} h, "
                   f"{len(split.duplicates)} duplicate group(s), splits "
                   f"{'/'.join(str(by_split[s]) for s in SPLITS)} (train/valid/test), "
                   f"{elapsed:.1f} s")
        return {"manifest": manifest, "stats": stats, "shards": shards, "summary": summary,
                "worker_pids": sorted({r["pid"] for r in results}),
                "elapsed_s": elapsed, "unchanged": unchanged}


def preflight(cfg: BuildConfig) -> None:
    """Checks that need no Prefect: fail in one line before a server starts."""
    for name, root in cfg.sources:
        if not Path(root).is_dir():
            raise BuildError(f"source {name}: {root} is not a directory (params.yaml `sources:` or --source)")
        get_adapter(name)  # an unknown source name fails here, naming the registered ones


def run_build(cfg: BuildConfig) -> dict:
    """Run the flow (Prefect's embedded server unless PREFECT_API_URL points at one).

    The lock is taken here, before Prefect starts, so a concurrent build is refused at once."""
    from prefect.exceptions import FailedRun

    try:
        preflight(cfg)
    except ValueError as exc:
        raise BuildError(str(exc)) from None
    with build_lock(Path(cfg.out)):
        try:
            flow_run = build_corpus.with_options(task_runner=_runner(cfg))
            return flow_run(cfg, lock_held=True)
        except FailedRun as exc:
            raise BuildError(str(exc)) from None
        except OSError as exc:
            if is_disk_error(exc):
                raise BuildError(disk_error_message(Path(cfg.out), exc)) from None
            raise
