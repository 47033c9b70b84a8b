"""Selections, config validation and CLI flag generation: each bad value is named in the error."""

import re

import pytest
import yaml

from neuronscope.cli import build_parser
from neuronscope.cli.flags import config_from_args
from neuronscope.config import RunConfig, load_config
from neuronscope.errors import ConfigError
from neuronscope.selection import parse_selection


@pytest.mark.parametrize(
    "spec,expected",
    [
        (None, [0, 1, 2, 3]),
        ("all", [0, 1, 2, 3]),
        ("3,1", [1, 3]),
        ("0-2", [0, 1, 2]),
        ("1-2,2,0", [0, 1, 2]),
        ([3, 0], [0, 3]),
    ],
)
def test_selection_parses(spec, expected):
    assert parse_selection(spec, 4, "layer") == expected


@pytest.mark.parametrize(
    "spec,fragment",
    [
        ("4", "layer 4 is out of range"),
        ("-1", "not an index"),
        ("x", "'x' is not an index"),
        ("3-1", "'3-1' is empty"),
        (",", "selects nothing"),
    ],
)
def test_selection_errors_name_the_value(spec, fragment):
    with pytest.raises(ConfigError, match=fragment):
        parse_selection(spec, 4, "layer")


def test_out_of_range_error_gives_the_valid_range():
    with pytest.raises(ConfigError, match=r"has 1536 neurons \(0-1535\)"):
        parse_selection("1536", 1536, "neuron")


def test_yaml_config_with_overrides(tmp_path):
    p = tmp_path / "run.yaml"
    p.write_text("record:\n  top_k: 7\n  layers: '1-2'\nexplain:\n  max_modes: 2\n")
    cfg = load_config(p, {"record": {"top_k": "9", "window": None}})
    assert cfg.record.top_k == 9 and cfg.record.layers == "1-2" and cfg.explain.max_modes == 2
    assert cfg.record.window == RunConfig().record.window


@pytest.mark.parametrize(
    "yaml_text,fragment",
    [
        ("record:\n  top_k: 0\n", "record.top_k=0"),
        ("record:\n  nope: 1\n", "record.nope"),
        ("- 1\n", "must hold a mapping"),
        ("a: [\n", "not valid YAML"),
    ],
)
def test_bad_config_values_are_named(tmp_path, yaml_text, fragment):
    p = tmp_path / "run.yaml"
    p.write_text(yaml_text)
    with pytest.raises(ConfigError, match=fragment.replace(".", r"\.").replace("[", r"\[")):
        load_config(p)


def test_missing_config_file_is_named(tmp_path):
    with pytest.raises(ConfigError, match="cannot read config file .*missing.yaml"):
        load_config(tmp_path / "missing.yaml")


def test_cli_flags_come_from_the_config_models():
    args = build_parser().parse_args(
        ["explain", "--records", "r", "--max-modes", "2", "--llm-replicas", "3", "--method", "single-pass"]
    )
    cfg = config_from_args(args)
    assert cfg.explain.max_modes == 2 and cfg.llm.replicas == 3 and cfg.explain.method == "single-pass"
    with pytest.raises(ConfigError, match="explain.method='bogus'"):
        config_from_args(build_parser().parse_args(["explain", "--records", "r", "--method", "bogus"]))


def test_exemplar_settings_round_trip_through_flags_and_yaml(tmp_path):
    args = ["record", "--out", "r", "--quantile-bins", "2", "--quantile-k", "5", "--negative", "auto"]
    cfg = config_from_args(build_parser().parse_args([*args, "--bottom-k", "7", "--pass-memory-gib", "0.5"]))
    r = cfg.record
    assert (r.quantile_bins, r.quantile_k, r.negative, r.bottom_k, r.pass_memory_gib) == (2, 5, "auto", 7, 0.5)
    p = tmp_path / "run.yaml"
    p.write_text(yaml.safe_dump({"record": r.model_dump()}))
    assert load_config(p).record == r
    d = RunConfig().record
    assert (d.quantile_bins, d.negative, d.bottom_k) == (4, "auto", None)
    # the recorder's defaults fill exactly the explain split's defaults
    from neuronscope.config import ExplainConfig
    from neuronscope.exemplars import SplitSizes, needed

    assert (
        needed(SplitSizes.of(ExplainConfig())) == (d.top_k, d.random_k)
        and SplitSizes.of(ExplainConfig()) == SplitSizes()
    )
    for bad, fragment in [("negative", "maybe"), ("quantile_bins", -1), ("quantile_k", 0), ("bottom_k", 0)]:
        with pytest.raises(ConfigError, match=f"record.{bad}="):
            load_config(None, {"record": {bad: fragment}})


def test_demo_flags_override_demo_defaults():
    from neuronscope.stages import DEMO_OVERRIDES

    cfg = config_from_args(build_parser().parse_args(["demo", "--layers", "1", "--top-k", "5"]), DEMO_OVERRIDES)
    assert cfg.record.layers == "1" and cfg.record.top_k == 5
    assert cfg.record.window == DEMO_OVERRIDES["record"]["window"]
    assert cfg.record.quantile_bins * cfg.record.quantile_k > 0  # the demo records strata too


def test_every_config_field_is_described_in_the_cli_help(monkeypatch):
    import argparse
    from typing import Literal, get_args, get_origin

    from neuronscope.cli.flags import SECTIONS

    monkeypatch.setenv("COLUMNS", "100000")  # no wrapping inside a description
    for name, field in RunConfig.model_fields.items():
        assert field.description, f"RunConfig.{name} has no description"
    subparsers = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    shown = set()
    for command, parser in subparsers.choices.items():
        # a flag's entry: its line and the help text argparse may put on the next
        entries = [" ".join(e.split()) for e in re.split(r"\n(?=  -)", parser.format_help())]
        for action in (a for a in parser._actions if "." in a.dest):
            section, name = action.dest.split(".", 1)
            field = SECTIONS[section][0].model_fields[name]
            assert field.description, f"{section}.{name} has no description"
            entry = next(e for e in entries if e.startswith(action.option_strings[0] + " "))
            assert field.description in entry, (command, entry)
            if get_origin(field.annotation) is Literal:
                allowed = entry.split(field.description)[1]
                assert all(str(v) in allowed for v in get_args(field.annotation)), (command, entry)
            shown.add((section, name))
    every = {(section, name) for section, (model, _) in SECTIONS.items() for name in model.model_fields}
    assert every <= shown, f"in no subcommand's help: {sorted(every - shown)}"


@pytest.mark.parametrize(
    "section,field,value,fragment",
    [
        ("record", "layers", "x", "record.layers='x': layer selection 'x' is not an index"),
        ("record", "neurons", "5-2", "record.neurons='5-2': neuron range '5-2' is empty"),
        ("explain", "layers", ",", "explain.layers=',': layer selection ',' selects nothing"),
        ("explain", "neurons", "1-x", "explain.neurons='1-x': neuron selection '1-x' is not an index"),
    ],
)
def test_bad_selections_fail_at_load(section, field, value, fragment):
    with pytest.raises(ConfigError, match=fragment.replace(".", r"\.")):
        load_config(None, {section: {field: value}})
    assert getattr(load_config(None, {section: {field: "0-3,7"}}), section).model_dump()[field] == "0-3,7"


def test_tensor_parallelism_needs_a_gpu_per_shard():
    parse = build_parser().parse_args
    with pytest.raises(
        ConfigError, match=r"invalid config llm: tensor_parallel_size=2 .* set gpus_per_replica to 2 \(it is 0\)"
    ):
        config_from_args(parse(["explain", "--records", "r", "--llm-tensor-parallel-size", "2"]))
    with pytest.raises(ConfigError, match=r"gpus_per_replica to 4 \(it is 0.5\)"):
        load_config(None, {"llm": {"tensor_parallel_size": 4, "gpus_per_replica": 0.5}})
    args = ["explain", "--records", "r", "--llm-tensor-parallel-size", "2", "--llm-gpus-per-replica", "2"]
    assert config_from_args(parse(args)).llm.tensor_parallel_size == 2
