"""Sweep files are read strictly: one SpecError line naming the file for anything that
does not say exactly one thing."""

from __future__ import annotations

import pytest

from raytda.specs import SpecError
from raytda.sweep_config import parse_config


@pytest.mark.parametrize("text, yaml_syntax, needle", [
    ('{"settings": ["toy-mlp"], "settings": ["x"]}', False, "'settings' is given twice"),
    ("settings: [toy-mlp]\nsettings: [x]\n", True, "'settings' is given twice (line 2)"),
    ("lds: {m: 5, m: 6}\n", True, "'m' is given twice"),
    ("{bad json", False, "not valid JSON"),
    ("a: [\n", True, "not valid YAML"),
    ("- toy-mlp\n- digits-mlp\n", True, "mapping of sweep keys at its top level, not a list"),
    ('"just a string"', False, "not a str"),
    ("settings: 5\n", True, "'settings' must be a name or a list of names, got 5"),
    ("ensembles: 5\n", True, "'ensembles' must be a spec string"),
    ("lds: m=5\n", True, "'lds' must be a mapping"),
    ("lds: {alpha: half}\n", True, "'lds.alpha' must be a number"),
    ("overrides: [1, 2]\n", True, "'overrides' must be a mapping"),
    ("proj_dim: '8'\n", True, "'proj_dim' must be an integer"),
    ("base_seed: true\n", True, "'base_seed' must be an integer"),
    ("widths: [1, 2]\n", True, "unknown sweep axis"),
])
def test_bad_files_are_one_line_naming_the_file(text, yaml_syntax, needle):
    with pytest.raises(SpecError) as e:
        parse_config(text, yaml_syntax, "config file s.cfg")
    msg = str(e.value)
    assert needle in msg and "s.cfg" in msg and "\n" not in msg


def test_good_file_keeps_its_values():
    cfg = parse_config("settings: toy-mlp\nmethods: [trak, {name: grad-dot}]\nlds: {m: 4}\n"
                       "ensembles: ['naive:I=1|2']\nbase_seed: null\n", True, "f")
    assert cfg == {"settings": "toy-mlp", "methods": ["trak", {"name": "grad-dot"}],
                   "lds": {"m": 4}, "ensembles": ["naive:I=1|2"], "base_seed": None}
    assert parse_config("", True, "f") == {}
