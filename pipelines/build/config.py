"""What a build is asked to do: :class:`BuildConfig` (from params.yaml + CLI), the constants of
the cache and the output layout, and :class:`BuildError`."""
from __future__ import annotations

import errno
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping

from iass.errors import CorpusError
from iass.pipelines import activity as act
from iass.pipelines import corpus_format as cf
from iass.pipelines.sources.resolve import SourceSpec, specs_from

log = logging.getLogger(__name__)

#: bump when harmonizing / writing changes what lands on disk (invalidates the audio cache)
BUILD_VERSION = "3"  # 2: content-keyed audio folders, versioned table snapshots; 3: stems.synth_render
#: bump when the labelling code changes its output (invalidates labels only)
LABEL_VERSION = "1"
CACHE_DIR = ".cache"
LOCK_NAME = ".build.lock"
#: published table snapshots, one folder per corpus version (see publish.py)
SNAPSHOT_DIR = ".versions"
#: write errors that mean the OUTPUT is at fault (full disk, quota, size cap, read-only), not a track
DISK_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS}
SHARD_DIGEST_KEY = b"iass_shard_digest"


class BuildError(CorpusError):
    """The build as a whole cannot go on (bad params, a source root missing, --strict, a lock)."""


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
    #: (name, canonical JSON of the adapter options) for sources that have options
    source_options: tuple[tuple[str, str], ...] = ()

    @property
    def label_params(self) -> dict:
        return act.label_params(dict(self.labels))

    @property
    def split_params(self) -> dict:
        return dict(self.splits)

    def options_of(self, source: str) -> dict[str, Any]:
        """The adapter options of ``source`` (those that differ from its yaml ``layout:``)."""
        for name, text in self.source_options:
            if name == source:
                return json.loads(text)
        return {}

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


def config_from_params(params: dict, sources: Mapping[str, Any] | Iterable[SourceSpec] | None = None,
                       out: str | None = None, strict: bool | None = None, runner: str | None = None,
                       dask_address: str | None = None, workers: int | None = None,
                       progress: bool = True, base_dir: str | Path | None = None) -> BuildConfig:
    """BuildConfig from params.yaml sections ``sources`` and ``corpus`` plus CLI overrides.

    ``sources``: resolved :class:`SourceSpec` s (:func:`~iass.pipelines.sources.resolve.resolve_sources`),
    or a ``{name: path | {path: ..., <option>: ...}}`` mapping (relative paths from the current
    directory), or None for the params' own ``sources:``. Relative paths written in params.yaml
    resolve against ``base_dir`` (the params file's folder), so the build works from any
    directory. A bad source raises SourceError; a bad corpus param BuildError."""
    c = dict(params.get("corpus") or {})

    def from_params(path: str) -> str:
        return str(Path(base_dir) / path) if base_dir is not None and not Path(path).is_absolute() \
            else str(path)

    specs = specs_from(sources, params, base_dir)
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
        log.warning("warning: corpus.hop %s != stft.hop %s: labels will not align with the "
                    "model's frames", hop, stft["hop"])
    return BuildConfig(
        out=str(out) if out else from_params(str(c.get("out", "datasets/corpus"))),
        sources=tuple((s.name, str(s.path)) for s in specs),
        sample_rate=int(c.get("sample_rate", cf.SAMPLE_RATE)),
        hop=hop,
        num_shards=int(c.get("num_shards", 16)),
        strict=bool(c.get("strict", False) if strict is None else strict),
        use_medleydb_lab=use_lab,
        labels=tuple(sorted(act.label_params(labels).items())),
        splits=tuple(sorted(_splits_params(c.get("splits") or {}, from_params).items())),
        mixture_tolerance_db=float(c.get("mixture_tolerance_db", -30.0)),
        runner=runner,
        workers=int(workers if workers is not None else c.get("workers", 2)) or (os.cpu_count() or 1),
        dask_address=dask_address,
        progress=progress,
        source_options=tuple((s.name, s.options_json()) for s in specs if s.options),
    )


def _splits_params(splits: Mapping[str, Any], resolve) -> dict[str, Any]:
    """``corpus.splits`` with each ``declared`` list read: a source's value is ``{native_id:
    split}`` or the path of a YAML file holding that mapping (relative to the params file, via
    ``resolve``), e.g. ``declared: {musdb: musdb18_splits.yaml}``, MUSDB's official split, which
    keeps a MedleyDB / Mixing Secrets song that is also in MUSDB in MUSDB's split even when the
    build has no MUSDB audio (see :mod:`iass.pipelines.splits`, reference songs). The manifest
    records the lists, not the path, so the corpus version follows their content."""
    import yaml

    out = dict(splits)
    declared = out.get("declared") or {}
    if not isinstance(declared, Mapping):
        raise BuildError(f"corpus.splits.declared: expected {{source: {{native_id: split}}}}, "
                         f"got {type(declared).__name__}")
    lists: dict[str, Any] = {}
    for source, value in declared.items():
        key = f"corpus.splits.declared.{source}"
        if isinstance(value, str):
            path = Path(resolve(value))
            try:
                value = yaml.safe_load(path.read_text(encoding="utf-8"))
            except OSError as exc:
                raise BuildError(f"{key}: cannot read {path}: {exc.strerror or exc}") from None
            except yaml.YAMLError as exc:
                raise BuildError(f"{key}: {path} is not valid YAML: "
                                 f"{' '.join(str(exc).split())}") from None
            where = f"{key} ({path})"
        else:
            where = key
        if value is None:
            value = {}
        if not isinstance(value, Mapping) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
            raise BuildError(f"{where}: expected a mapping native_id: split")
        lists[str(source)] = dict(value)
    if "declared" in out:
        out["declared"] = lists
    return out


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
