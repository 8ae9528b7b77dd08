"""The canonical instrument taxonomy (``datasets/taxonomy.yaml``) and the source label maps.

The taxonomy is data: a tree of canonical instruments plus the separation targets. This module
loads and checks it, answers hierarchy questions (descendants, which targets an instrument
feeds) and computes the taxonomy hash recorded in every corpus manifest.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import yaml

from iass import REGISTRY_DIR
from iass.errors import ConfigError


class TaxonomyError(ConfigError):
    """The taxonomy or a label map is malformed, or a label does not map."""


@dataclass(frozen=True)
class Taxonomy:
    version: int
    parent: dict[str, str | None]          # instrument -> parent (None for a root)
    children: dict[str, tuple[str, ...]]
    targets: tuple[str, ...]
    descriptions: dict[str, str] = field(default_factory=dict)
    residual: frozenset[str] = frozenset()   # leaves marked `residual: true` (MUSDB's `other`)
    sha256: str = ""
    path: Path | None = None

    @property
    def instruments(self) -> tuple[str, ...]:
        """Every canonical instrument, in file order (parents before children)."""
        return tuple(self.parent)

    @property
    def leaves(self) -> tuple[str, ...]:
        return tuple(i for i in self.parent if not self.children[i])

    def __contains__(self, name: str) -> bool:
        return name in self.parent

    def check(self, name: str) -> str:
        if name not in self.parent:
            raise TaxonomyError(
                f"{name!r} is not a canonical instrument of {self.path or 'the taxonomy'} "
                f"(known: {', '.join(self.parent)})"
            )
        return name

    def ancestors(self, name: str) -> tuple[str, ...]:
        """Parents of ``name`` up to its root, nearest first."""
        out = []
        node = self.parent[self.check(name)]
        while node is not None:
            out.append(node)
            node = self.parent[node]
        return tuple(out)

    def descendants(self, name: str, include_self: bool = True) -> tuple[str, ...]:
        out = [name] if include_self else []
        for child in self.children[self.check(name)]:
            out.extend(self.descendants(child, True))
        return tuple(out)

    def covers(self, group: str, instrument: str) -> bool:
        """True when ``instrument`` is ``group`` or lies under it."""
        return instrument == group or group in self.ancestors(instrument)

    def root(self, name: str) -> str:
        anc = self.ancestors(name)
        return anc[-1] if anc else name

    def target_known(self, target: str, unknown_instruments) -> bool:
        """Whether a track with these ``unknown_instruments`` separates ``target``'s audio.

        Unknown when any instrument under the target is unknown (MUSDB's piano, inside
        ``other``). A *residual* node (``residual: true``: ``other``) is the stem of everything
        a track's annotated stems are not; only a track that is not fully annotated has one (an
        unannotated stem maps there: MUSDB's ``other``, MedleyDB's 'Unlabeled'), so on a fully
        annotated track (no unknown instrument) a target holding a residual node is unknown too.
        """
        unknown = set(unknown_instruments or ())
        subtree = self.descendants(target)
        if any(i in unknown for i in subtree):
            return False
        return bool(unknown) or not any(i in self.residual for i in subtree)


def _walk(nodes: dict, parent: str | None, out: Taxonomy, path: Path) -> None:
    for name, spec in (nodes or {}).items():
        spec = spec or {}
        if not isinstance(spec, dict):
            raise TaxonomyError(f"{path}: instrument {name!r} must be a mapping, got {spec!r}")
        if name in out.parent:
            raise TaxonomyError(f"{path}: instrument {name!r} defined twice")
        out.parent[name] = parent
        kids = spec.get("children") or {}
        out.children[name] = tuple(kids)
        out.descriptions[name] = str(spec.get("description", ""))
        _walk(kids, name, out, path)


def load_taxonomy(path: str | Path | None = None) -> Taxonomy:
    path = Path(path) if path else REGISTRY_DIR / "taxonomy.yaml"
    return _load_taxonomy_cached(str(Path(path).resolve()))


@lru_cache(maxsize=8)
def _load_taxonomy_cached(path_str: str) -> Taxonomy:
    path = Path(path_str)
    raw = path.read_bytes()
    doc = yaml.safe_load(raw)
    if not isinstance(doc, dict) or "instruments" not in doc:
        raise TaxonomyError(f"{path}: expected a mapping with 'instruments' and 'targets'")
    tax = Taxonomy(
        version=int(doc.get("version", 0)),
        parent={},
        children={},
        targets=tuple(doc.get("targets") or ()),
        sha256=hashlib.sha256(raw).hexdigest(),
        path=path,
    )
    _walk(doc["instruments"], None, tax, path)
    for t in tax.targets:
        tax.check(t)
    residual = frozenset(_residual_nodes(doc["instruments"]))
    for name in residual:
        if tax.children[name]:
            raise TaxonomyError(f"{path}: residual instrument {name!r} must be a leaf (it is one "
                                "corpus stem of unknown content)")
    object.__setattr__(tax, "residual", residual)
    return tax


def _residual_nodes(nodes: dict):
    for name, spec in (nodes or {}).items():
        spec = spec if isinstance(spec, dict) else {}
        if spec.get("residual"):
            yield name
        yield from _residual_nodes(spec.get("children") or {})


# --------------------------------------------------------------------------------------------
# Source label maps: datasets/sources/<source>.yaml (source label -> canonical instrument)
# --------------------------------------------------------------------------------------------


def normalize_label(label: object) -> str:
    """The form labels are matched in: white space collapsed, case folded.

    Corpora spell one label many ways ('KickTrigger', 'kicktrigger', 'DrumLoop '), so one map
    entry covers them all.
    """
    return " ".join(str(label).split()).casefold()


@dataclass(frozen=True)
class LabelMap:
    """One source's label map and registry entry (``datasets/sources/<source>.yaml``)."""

    source: str
    path: Path
    labels: dict[str, str]              # normalized source label -> canonical instrument
    unannotated: frozenset[str]         # normalized labels whose stems' content is unknown
    layout: dict                        # adapter options (constructor kwargs override them)
    description: str
    doc: dict                           # the whole yaml (validation lists, ...)
    sha256: str

    def lookup(self, label: object, *, track: str | None = None) -> str:
        key = normalize_label(label)
        try:
            return self.labels[key]
        except KeyError:
            where = f" (track {track})" if track else ""
            raise TaxonomyError(
                f"unmapped {self.source} label {str(label)!r}{where}: add it to {self.path} "
                f"under 'labels:' with a canonical instrument of the taxonomy"
            ) from None

    def is_annotated(self, labels) -> bool:
        """False when the stem's primary label says its content is not described."""
        labels = _as_label_list(labels)
        return not labels or normalize_label(labels[0]) not in self.unannotated


def label_map_path(source: str) -> Path:
    return REGISTRY_DIR / "sources" / f"{source}.yaml"


def load_label_map(source: str, path: str | Path | None = None) -> LabelMap:
    """The label map of ``source`` (cached; checked against the taxonomy)."""
    path = Path(path) if path else label_map_path(source)
    return _load_label_map_cached(source, str(path.resolve()))


@lru_cache(maxsize=32)
def _load_label_map_cached(source: str, path_str: str) -> LabelMap:
    path = Path(path_str)
    if not path.is_file():
        raise TaxonomyError(f"{path}: no label map for source {source!r} (expected this file)")
    raw = path.read_bytes()
    try:
        doc = yaml.safe_load(raw)
    except yaml.YAMLError as exc:
        raise TaxonomyError(f"{path}: not valid YAML ({_one_line(exc)})") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("labels"), dict):
        raise TaxonomyError(f"{path}: expected a mapping with a 'labels:' mapping")
    tax = load_taxonomy()
    labels: dict[str, str] = {}
    for label, canonical in doc["labels"].items():
        key = normalize_label("" if label is None else label)
        if not isinstance(canonical, str) or canonical not in tax:
            raise TaxonomyError(
                f"{path}: label {label!r} maps to {canonical!r}, which is not a canonical "
                f"instrument of {tax.path}"
            )
        if key in labels and labels[key] != canonical:
            raise TaxonomyError(
                f"{path}: label {label!r} is listed twice (as spellings of {key!r}) with "
                f"different instruments ({labels[key]!r}, {canonical!r})"
            )
        labels[key] = canonical
    unannotated = frozenset(normalize_label(x) for x in (doc.get("unannotated") or []))
    unknown = sorted(u for u in unannotated if u not in labels)
    if unknown:
        raise TaxonomyError(f"{path}: 'unannotated' lists labels that are not mapped: {unknown}")
    layout = doc.get("layout") or {}
    if not isinstance(layout, dict):
        raise TaxonomyError(f"{path}: 'layout:' must be a mapping")
    return LabelMap(
        source=source,
        path=path,
        labels=labels,
        unannotated=unannotated,
        layout=dict(layout),
        description=str(doc.get("description", "")),
        doc=doc,
        sha256=hashlib.sha256(raw).hexdigest(),
    )


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())


def _as_label_list(labels) -> list[str]:
    if labels is None:
        return []
    if isinstance(labels, (str, int, float)):
        return [str(labels)]
    return [("" if x is None else str(x)) for x in labels]


def map_label(source: str, label: object, *, track: str | None = None) -> str:
    """Canonical instrument of one source label; TaxonomyError naming label, track and yaml."""
    return load_label_map(source).lookup(label, track=track)


def stem_instrument(source: str, labels, track: str | None = None) -> str:
    """Canonical instrument of a stem from its (possibly list-valued) source labels.

    Every label must map (a typo anywhere in the list is an error); the first, primary label
    decides, as in MedleyDB where ['male singer', 'vocalists'] is a lead singer.
    """
    label_list = _as_label_list(labels)
    if not label_list:
        lm = load_label_map(source)
        where = f" (track {track})" if track else ""
        raise TaxonomyError(f"{source} stem without an instrument label{where}; see {lm.path}")
    mapped = [map_label(source, lab, track=track) for lab in label_list]
    return mapped[0]


def label_map_hash(source: str) -> str:
    """sha256 of the source's label map file (recorded in corpus manifests)."""
    return load_label_map(source).sha256


def registry_hash(sources) -> str:
    """One hash over the taxonomy and the label maps of ``sources`` (order-independent)."""
    h = hashlib.sha256(load_taxonomy().sha256.encode())
    for source in sorted(sources):
        h.update(f"\0{source}\0{label_map_hash(source)}".encode())
    return h.hexdigest()
