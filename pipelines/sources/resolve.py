"""One resolver for the source corpora a command reads: ``iass sources check``, ``iass corpus
build`` and the build flow all turn their inputs into :class:`SourceSpec` s here.

Accepted forms (all give the same specs for the same inputs):

* params.yaml ``sources:``, a value per source name, either a path or a mapping with ``path`` and
  adapter options (the ``layout:`` keys of ``datasets/sources/<name>.yaml``)::

      sources:
        musdb: /data/musdb18hq
        medleydb: {path: /data/MedleyDB/Audio, metadata_dir: /src/medleydb/data/Metadata}

  Relative paths (``path`` and the path options, those ending in ``_dir``/``_file``/``_path``)
  resolve against the params file's folder.
* command line ``NAME=PATH`` items (``--source NAME=PATH`` of ``corpus build``, the positional
  arguments of ``sources check``) plus ``NAME.KEY=VALUE`` adapter options (``-o/--option``; the
  value is read as YAML). Relative paths resolve against the current directory. CLI items replace
  the params file's ``sources:``; CLI options add to / override the options of either.

Errors are one :class:`~iass.errors.SourceError` line naming the source and the key, e.g.
``sources.medleydb.metadata_dir: /x: no such directory`` or
``sources.medleydb: unknown option 'foo' (known: ...)``.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

from iass.errors import SourceError

#: option keys that name a file or folder (resolved like ``path``, checked to exist)
PATH_OPTION_SUFFIXES = ("_dir", "_file", "_path")


def is_path_option(key: str) -> bool:
    return str(key).endswith(PATH_OPTION_SUFFIXES)


@dataclass(frozen=True)
class SourceSpec:
    """A resolved source: its registered name, an absolute root and the adapter options that
    differ from the label map's ``layout:`` defaults (path options absolute)."""

    name: str
    path: Path
    options: dict[str, Any] = field(default_factory=dict, compare=True, hash=False)

    def options_json(self) -> str:
        """The options as canonical JSON (hashable, ordered): how BuildConfig carries them."""
        return json.dumps(self.options, sort_keys=True, separators=(",", ":"))


def _abs(path: str | Path, base: Path) -> Path:
    p = Path(os.path.expanduser(str(path)))
    return Path(os.path.abspath(p if p.is_absolute() else base / p))


def _parse_value(text: str) -> Any:
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def _known_options(name: str) -> dict[str, Any]:
    from iass.pipelines.sources.base import adapter_options

    return adapter_options(name)


def _check_name(name: str, where: str) -> None:
    from iass.pipelines.sources.base import source_names

    if name not in source_names():
        raise SourceError(f"{where}: unknown source {name!r} (registered: {', '.join(source_names())})")


def _spec(name: str, path: Any, options: Mapping[str, tuple[Any, Path, str]], where: str,
          path_key: str, base: Path) -> SourceSpec:
    """A checked SourceSpec; ``path`` relative to ``base``; ``options``: key -> (value, base
    folder of a relative path, where it was written)."""
    if path is None or str(path).strip() == "":
        raise SourceError(f"{where}: no 'path' key (expected {name}: PATH or "
                          f"{name}: {{path: PATH, <option>: ...}})")
    root = _abs(str(path), base)
    if not root.is_dir():
        raise SourceError(f"{path_key}: {root}: no such directory")
    known = _known_options(name)
    resolved: dict[str, Any] = {}
    for key, (value, obase, owhere) in sorted(options.items()):
        if key not in known:
            raise SourceError(f"{owhere}: unknown option {key!r} (known: {', '.join(sorted(known))})")
        if is_path_option(key) and value is not None:
            p = _abs(str(value), obase)
            if not p.exists():
                kind = "directory" if key.endswith("_dir") else "file"
                raise SourceError(f"{owhere}.{key}: {p}: no such {kind}")
            value = str(p)
        if value != known[key]:  # an option equal to the default is no option (same cache keys)
            resolved[key] = value
    return SourceSpec(name, root, resolved)


def _params_entries(entries: Mapping[str, Any], base: Path, prefix: str):
    """params ``sources:`` -> [(name, path, {key: (value, base, where)}, where, path_key, base)]."""
    if not isinstance(entries, Mapping):
        raise SourceError(f"{prefix}: expected a mapping of source name -> path or {{path: ...}}, "
                          f"got {type(entries).__name__}")
    out = []
    for name, entry in entries.items():
        name = str(name)
        where = f"{prefix}.{name}"
        _check_name(name, where)
        options: dict[str, tuple[Any, Path, str]] = {}
        if isinstance(entry, Mapping):
            entry = dict(entry)
            path = entry.pop("path", None)
            path_key = f"{where}.path"
            options = {str(k): (v, base, where) for k, v in entry.items()}
        else:
            path, path_key = entry, where
        out.append((name, path, options, where, path_key, base))
    return out


def _cli_entries(items: Iterable[str], flag: str):
    out = []
    for item in items:
        name, eq, path = str(item).partition("=")
        name, path = name.strip(), path.strip()
        from iass.pipelines.sources.base import source_names

        if not eq or not name or not path:
            raise SourceError(f"{flag} {item!r}: expected NAME=PATH "
                              f"(sources: {', '.join(source_names())})")
        where = f"{flag} {name}"
        _check_name(name, where)
        out.append((name, path, {}, where, where, Path.cwd()))
    return out


def resolve_sources(params_sources: Mapping[str, Any] | None = None, *,
                    base_dir: str | Path | None = None,
                    items: Iterable[str] = (), options: Iterable[str] = (),
                    prefix: str = "sources", flag: str = "--source",
                    option_flag: str = "--option") -> list[SourceSpec]:
    """The sources to read, resolved and checked; raises SourceError (one line) if any is wrong.

    ``params_sources``: the ``sources:`` mapping of a params file (its relative paths resolve
    against ``base_dir``, default the current directory). ``items``: CLI ``NAME=PATH`` strings
    (relative to the current directory); when given they replace ``params_sources``.
    ``options``: CLI ``NAME.KEY=VALUE`` strings applied to those sources. Sorted by name; a name
    given twice keeps the last."""
    cwd = Path.cwd()
    items = list(items)
    if items:
        entries = _cli_entries(items, flag)
    elif params_sources:
        entries = _params_entries(params_sources, Path(base_dir) if base_dir is not None else cwd,
                                  prefix)
    else:
        raise SourceError(f"no sources: set `{prefix}:` in the params file or give NAME=PATH")
    by_name = {e[0]: e for e in entries}
    for item in options:
        key, eq, value = str(item).partition("=")
        name, dot, opt = key.partition(".")
        if not eq or not dot or not opt or not name:
            raise SourceError(f"{option_flag} {item!r}: expected NAME.KEY=VALUE")
        if name not in by_name:
            raise SourceError(f"{option_flag} {key}: no source {name!r} is read "
                              f"(sources: {', '.join(sorted(by_name)) or 'none'})")
        by_name[name][2][opt] = (_parse_value(value), cwd, f"{option_flag} {name}")
    return [_spec(*entry) for _, entry in sorted(by_name.items())]


def specs_from(sources: Mapping[str, Any] | Iterable[SourceSpec] | None, params: Mapping | None = None,
               base_dir: str | Path | None = None) -> list[SourceSpec]:
    """Specs from whatever a caller holds: resolved specs (kept), a ``{name: path | {path: ..}}``
    mapping given as an argument (relative to the current directory), else the params file's
    ``sources:`` (relative to ``base_dir``)."""
    if sources is None:
        return resolve_sources((params or {}).get("sources"), base_dir=base_dir)
    if isinstance(sources, Mapping):
        return resolve_sources(dict(sources), base_dir=None, prefix="sources")
    specs = list(sources)
    if not specs:
        raise SourceError("no sources: set `sources:` in params.yaml or pass --source NAME=PATH")
    return sorted(specs, key=lambda s: s.name)
