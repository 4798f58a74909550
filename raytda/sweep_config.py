"""Sweep files (``raytda sweep --config``): JSON or YAML read strictly, so that a file
that does not say exactly one thing fails with one line naming the file and the key.

Strict means: the top level is a mapping of known keys, each of its expected shape; a
key given twice (which JSON and YAML parsers otherwise settle silently, last one wins)
is an error, as is a file that does not parse.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from raytda.specs import SpecError

_LIST_OF_NAMES = "a name or a list of names"
_LIST_OF_SPECS = "a spec string, a mapping, or a list of those"


def _names(v: Any) -> bool:
    return isinstance(v, str) or (isinstance(v, list) and all(isinstance(x, str) for x in v))


def _specs(v: Any) -> bool:
    items = v if isinstance(v, list) else [v]
    return all(isinstance(x, (str, dict)) for x in items)


def _int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


# key -> (what it must be, in words; its check)
SHAPES: dict[str, tuple[str, Any]] = {
    "settings": (_LIST_OF_NAMES, _names),
    "methods": (_LIST_OF_SPECS, _specs),
    "ensembles": (_LIST_OF_SPECS, _specs),
    "configurations": ("a 'method@ensemble' string, a mapping {method, ensemble}, or a list "
                       "of those", _specs),
    "features": ("a features name like 'dense' or 'factorized:uncovered=skip'",
                 lambda v: isinstance(v, str)),
    "lds": ("a mapping like {m: 50, alpha: 0.5}", lambda v: isinstance(v, dict)),
    "overrides": ("a mapping like {epochs: 3}", lambda v: isinstance(v, dict)),
    "data_dir": ("a path", lambda v: isinstance(v, str)),
    "store": ("a path or URI", lambda v: isinstance(v, str)),
    "proj_dim": ("an integer", _int),
    "base_seed": ("an integer", _int),
}
CONFIG_KEYS = frozenset(SHAPES)
_LDS_TYPES = {"m": ("an integer", _int), "alpha": ("a number", _number),
              "seed": ("an integer", _int), "models_per_subset": ("an integer", _int)}


def _unique_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise SpecError(f"key {k!r} is given twice")
        out[k] = v
    return out


def _parse_json(text: str) -> Any:
    return json.loads(text, object_pairs_hook=_unique_pairs)


def _parse_yaml(text: str) -> Any:
    import yaml

    class UniqueKeyLoader(yaml.SafeLoader):
        """SafeLoader that refuses a mapping with a repeated key."""

    def construct_mapping(loader, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = loader.construct_object(key_node, deep=deep)
            if key in seen:
                mark = key_node.start_mark
                raise SpecError(f"key {key!r} is given twice (line {mark.line + 1})")
            seen.add(key)
        return yaml.SafeLoader.construct_mapping(loader, node, deep)

    UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG,
                                    construct_mapping)
    return yaml.load(text, Loader=UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass


def parse_config(text: str, yaml_syntax: bool, where: str) -> dict[str, Any]:
    """The sweep mapping in ``text`` (JSON, or YAML when ``yaml_syntax``), shape-checked;
    every problem is a one-line :class:`SpecError` that starts with ``where``."""
    try:
        cfg = _parse_yaml(text) if yaml_syntax else _parse_json(text)
    except SpecError as e:
        raise SpecError(f"{where}: {e}") from None
    except ValueError as e:  # json.JSONDecodeError
        raise SpecError(f"{where} is not valid JSON ({e})") from None
    except Exception as e:  # yaml.YAMLError; its message spans lines
        detail = " ".join(str(e).split())
        raise SpecError(f"{where} is not valid YAML ({detail})") from None
    if cfg is None:
        return {}
    if not isinstance(cfg, dict):
        raise SpecError(f"{where} must hold a mapping of sweep keys at its top level, not a "
                        f"{type(cfg).__name__}; valid keys: {sorted(CONFIG_KEYS)}")
    unknown = set(map(str, cfg)) - CONFIG_KEYS
    if unknown:
        raise SpecError(f"unknown sweep axis/key(s) {sorted(unknown)} in {where}; "
                        f"valid keys: {sorted(CONFIG_KEYS)}")
    for key, value in cfg.items():
        what, ok = SHAPES[key]
        # null means "the default" for every key but the lists (an empty grid is an error
        # the sweep reports itself).
        if value is not None and not ok(value):
            raise SpecError(f"{where}: '{key}' must be {what}, got {value!r}")
    for key, value in (cfg.get("lds") or {}).items():
        what, ok = _LDS_TYPES.get(key, (None, None))
        if ok is not None and not ok(value):
            raise SpecError(f"{where}: 'lds.{key}' must be {what}, got {value!r}")
    return cfg


def load_config(path: str) -> dict[str, Any]:
    """Read a sweep file: ``.yaml``/``.yml`` as YAML, anything else as JSON."""
    p = Path(path)
    if not p.is_file():
        raise SpecError(f"config file {path} does not exist")
    try:
        text = p.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise SpecError(f"cannot read config file {path} ({e})") from None
    return parse_config(text, p.suffix in (".yaml", ".yml"), f"config file {path}")
