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


class TaxonomyError(ValueError):
    """The taxonomy or a label map is malformed, or a label does not map."""


@dataclass(frozen=True)
class Taxonomy:
    version: int
    parent: dict[str, str | None]          # instrument -> parent (None for a root)
    children: dict[str, tuple[str, ...]]
    targets: tuple[str, ...]
    descriptions: dict[str, str] = field(default_factory=dict)
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
    return tax
