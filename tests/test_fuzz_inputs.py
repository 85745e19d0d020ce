"""Fuzzed config and scenario files through the real `station` entry (issue 9, section 5).

Every generated file goes through ``station.cli.main``: ``station run --check`` (which runs
exactly the loading and checking a real start does, then stops before starting anything)
and, for a few files known to be wrong, the real ``station run --sim ... --duration``.

- a file known to be wrong: exit 2, one line on stderr naming the problem, no traceback,
  nothing on stdout, no file created or changed;
- a file known to be right: exit 0, "FILE: OK";
- random bytes and mutated copies of the shipped files: one or the other, nothing else.

The wrong values are derived from the config and scenario dataclasses (type, bounds,
choices), so a new key is fuzzed without touching this file.
"""
from __future__ import annotations

import dataclasses
import math
import re
import tempfile
import tomllib
import types
import typing
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from station import scenario as scenarios
from station.cli import main
from station.config import BCM_PINS, PROVENANCE_FIELDS, Config

ROOT = Path(__file__).resolve().parents[1]
SHIPPED_CONFIGS = sorted((ROOT / "config").glob("*.toml"))
SHIPPED_SCENARIOS = sorted((ROOT / "config" / "sim").glob("*.toml"))
HUB_SLOTS = 4
MODELS = ("iPhone10,3", "iPhone12,1", "iPhone13,2", "iPhone14,5", "iPhone14,7", "iPhone15,4")

def fuzz(examples: int) -> settings:
    """Bounded and repeatable: the whole file runs in well under 20 s on two cores."""
    return settings(max_examples=examples, deadline=None, database=None, derandomize=True,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                           HealthCheck.filter_too_much, HealthCheck.data_too_large])


# -- writing TOML ------------------------------------------------------------------------------------

def toml_string(text: str) -> str:
    out = []
    for char in text:
        if char in '"\\':
            out.append("\\" + char)
        elif " " <= char <= "~":
            out.append(char)
        else:
            out.append(f"\\u{ord(char):04x}" if ord(char) <= 0xFFFF else f"\\U{ord(char):08x}")
    return '"' + "".join(out) + '"'


def toml_key(key: str) -> str:
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else toml_string(key)


def dump(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf") \
            if math.isinf(value) else repr(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return toml_string(value)
    if isinstance(value, list):
        return "[" + ", ".join(map(dump, value)) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{toml_key(k)} = {dump(v)}" for k, v in value.items()) + " }"
    raise TypeError(value)


def document(tables: dict[str, Any]) -> str:
    """Top-level tables as [name], lists of tables as [[name]], anything else as a root key."""
    lines = [f"{toml_key(k)} = {dump(v)}" for k, v in tables.items()
             if not isinstance(v, dict) and not (isinstance(v, list) and v and
                                                 all(isinstance(b, dict) for b in v))]
    for name, body in tables.items():
        if not isinstance(body, (dict, list)) or (isinstance(body, list) and not body):
            continue
        if isinstance(body, list) and not all(isinstance(b, dict) for b in body):
            continue
        blocks = body if isinstance(body, list) else [body]
        for block in blocks:
            lines.append(f"[[{toml_key(name)}]]" if isinstance(body, list) else f"[{toml_key(name)}]")
            lines += [f"{toml_key(k)} = {dump(v)}" for k, v in block.items()]
    return "\n".join(lines) + "\n"


# -- values from the schema --------------------------------------------------------------------------

def _unwrap(hint: Any) -> Any:
    if get_origin(hint) in (typing.Union, types.UnionType):
        return next(a for a in get_args(hint) if a is not type(None))
    return hint


def fields_of(cls: type) -> list[tuple[str, Any, tuple[float, float] | None]]:
    hints = typing.get_type_hints(cls)
    return [(f.name, _unwrap(hints[f.name]), f.metadata.get("bounds")) for f in dataclasses.fields(cls)
            if f.name not in PROVENANCE_FIELDS]


scalars = st.one_of(st.text(max_size=8), st.booleans(), st.integers(-10**6, 10**6),
                    st.floats(allow_nan=True, allow_infinity=True), st.just([]), st.just({}))


def wrong_value(hint: Any, bounds: tuple[float, float] | None, bad_paths: list[str]) -> st.SearchStrategy:
    """Values of ``hint`` the loader must refuse."""
    origin, args = get_origin(hint), get_args(hint)
    if origin is Literal:
        return scalars.filter(lambda v: not any(type(v) is type(a) and v == a for a in args))
    if origin is tuple:
        return st.one_of(scalars.filter(lambda v: not isinstance(v, list)),
                         wrong_value(args[0], bounds, bad_paths).map(lambda v: [v]))
    if origin is dict:
        return st.one_of(scalars.filter(lambda v: not isinstance(v, dict)),
                         wrong_value(args[1], None, bad_paths).map(lambda v: {"1-1.1": v}))
    if dataclasses.is_dataclass(hint):
        return st.one_of(scalars.filter(lambda v: not isinstance(v, dict)),
                         st.sampled_from(fields_of(hint)).flatmap(
                             lambda f: wrong_value(f[1], f[2], bad_paths).map(lambda v: {f[0]: v})))
    if hint is Path:
        return st.one_of(st.sampled_from(["", "a\0b", "~nosuchuser9/x", *bad_paths]),
                         scalars.filter(lambda v: not isinstance(v, str)))
    if hint is bool:
        return scalars.filter(lambda v: not isinstance(v, bool))
    if hint is str:
        return scalars.filter(lambda v: not isinstance(v, str))
    numbers = (int, float) if hint is float else (int,)
    wrong_type = scalars.filter(lambda v: isinstance(v, bool) or not isinstance(v, numbers))
    if bounds is None:
        return wrong_type
    low, high = bounds
    outside = st.one_of(st.integers(max_value=math.ceil(low) - 1), st.integers(min_value=math.floor(high) + 1))
    if hint is float:
        outside = st.one_of(outside, st.sampled_from([math.nan, math.inf, -math.inf]),
                            st.floats(max_value=low, exclude_max=True),
                            st.floats(min_value=high, exclude_min=True))
    return st.one_of(wrong_type, outside)


# -- running the real command ----------------------------------------------------------------------

def snapshot(directory: Path) -> dict[str, bytes]:
    return {str(p.relative_to(directory)): p.read_bytes() if p.is_file() else b"<dir>"
            for p in sorted(directory.rglob("*"))}


@contextmanager
def bench():
    """A directory holding a simulated station's config (its state would go there too)."""
    with tempfile.TemporaryDirectory() as name:
        directory = Path(name)
        (directory / "afile").write_text("not a directory\n")
        config = directory / "station.toml"
        config.write_text(document(base_config(directory)))
        yield directory, config


def base_config(directory: Path) -> dict[str, Any]:
    return {"station": {"state_dir": str(directory / "state")}, "hardware": {"backend": "sim"},
            "ipsw": {"cache_dir": str(directory / "ipsw")}, "hub": {"slots": HUB_SLOTS}}


def station(capsys: pytest.CaptureFixture[str], argv: list[str]) -> tuple[int, str, str]:
    try:
        code = main(argv)
    except SystemExit as stopped:
        code = stopped.code  # type: ignore[assignment]
    out, err = capsys.readouterr()
    return code, out, err


def assert_refused(result: tuple[int, str, str], before: dict[str, bytes], directory: Path) -> None:
    code, out, err = result
    assert code == 2, (code, out, err)
    assert out == ""
    assert err.endswith("\n") and err.count("\n") == 1, err
    assert "Traceback" not in err
    assert err.startswith(("config error: ", "scenario error: ", "station: ")), err
    assert snapshot(directory) == before


def assert_loaded(result: tuple[int, str, str], *files: Path) -> None:
    code, out, err = result
    assert (code, err) == (0, ""), err
    assert out == "".join(f"{f}: OK\n" for f in files)


def check(capsys, directory: Path, config: Path, scenario: Path | None = None) -> tuple[int, str, str]:
    argv = ["run", "--check", "--config", str(config)] + (["--sim", str(scenario)] if scenario else [])
    return station(capsys, argv)


# -- config files ---------------------------------------------------------------------------------

CONFIG_KEYS = [(name, *key) for name, hint, _ in fields_of(Config) for key in fields_of(hint)]


def wrong_config(directory: Path) -> st.SearchStrategy[dict[str, Any]]:
    """A valid base with one key made wrong, or an unknown key or section."""
    def with_key(choice: tuple[str, str, Any, Any]) -> st.SearchStrategy[dict[str, Any]]:
        section, key, hint, bounds = choice
        return wrong_value(hint, bounds, [str(directory / "afile")]).map(
            lambda v: _merged(base_config(directory), section, key, v))

    special = st.sampled_from([
        ("leds", "pins", [5, 5]), ("leds", "pins", [17]), ("leds", "pins", [BCM_PINS[1] + 1]),
        ("buttons", "ok_pin", 17), ("ipsw", "models", ["../../etc"]), ("ipsw", "pin", {"x": "1"}),
        ("ipsw", "catalog_url", "https://example.com/"), ("hub", "ports", {"1-1.1": HUB_SLOTS + 1}),
        ("hub", "ports", {"nope": 1}), ("display", "rotate", False), ("display", "rotate", 2.0),
    ]).map(lambda c: _merged(base_config(directory), *c))
    unknown_key = st.tuples(st.sampled_from([s for s, *_ in CONFIG_KEYS]), st.text(min_size=1, max_size=12),
                            scalars).filter(lambda t: t[1] not in {k for s, k, *_ in CONFIG_KEYS if s == t[0]}
                                            ).map(lambda t: _merged(base_config(directory), *t))
    unknown_section = st.text(min_size=1, max_size=12).filter(
        lambda name: name not in {s for s, *_ in CONFIG_KEYS}).map(
        lambda name: {**base_config(directory), name: {}})
    return st.one_of(st.sampled_from(CONFIG_KEYS).flatmap(with_key), special, unknown_key, unknown_section)


def _merged(base: dict[str, Any], section: str, key: str, value: Any) -> dict[str, Any]:
    return {**base, section: {**base.get(section, {}), key: value}}


@fuzz(300)
@given(data=st.data())
def test_a_wrong_config_is_one_line_and_changes_nothing(capsys, data):
    with bench() as (directory, config):
        config.write_text(document(data.draw(wrong_config(directory), label="config")))
        before = snapshot(directory)
        assert_refused(check(capsys, directory, config), before, directory)


def valid_config(directory: Path) -> st.SearchStrategy[dict[str, Any]]:
    buttons = st.lists(st.integers(*BCM_PINS), min_size=3, max_size=3, unique=True)
    return st.fixed_dictionaries({
        "station": st.fixed_dictionaries({"state_dir": st.just(str(directory / "state"))}, optional={
            "id": st.text(max_size=20), "operator": st.text(max_size=20),
            "records_reserve_mb": st.integers(1, 1_000_000),
            "log_level": st.sampled_from(["debug", "info", "warning", "error"])}),
        "hardware": st.just({"backend": "sim"}),
        "display": st.fixed_dictionaries({}, optional={
            "rotate": st.sampled_from([0, 2]), "i2c_address": st.integers(0x03, 0x77),
            "min_redraw_s": st.floats(0.02, 5.0), "frames_dir": st.just("frames")}),
        "buttons": buttons.flatmap(lambda pins: st.fixed_dictionaries(
            {"select_pin": st.just(pins[0]), "ok_pin": st.just(pins[1]), "back_pin": st.just(pins[2])},
            optional={"bounce_s": st.floats(0.0, 1.0), "hold_s": st.integers(1, 10)})),
        "hub": st.fixed_dictionaries({"slots": st.integers(1, 64)}, optional={
            "ports": st.dictionaries(st.from_regex(r"\A[1-3]-1(\.[1-7]){1,2}\Z"), st.just(1), max_size=1)}),
        "restore": st.fixed_dictionaries({}, optional={
            "mode": st.sampled_from(["counter", "line"]), "retries": st.integers(0, 5),
            "timeout_s": st.floats(10.0, 86400.0), "max_parallel_restores": st.integers(1, 32)}),
        "ipsw": st.fixed_dictionaries({"cache_dir": st.just(str(directory / "ipsw"))}, optional={
            "models": st.lists(st.sampled_from(MODELS), max_size=3),
            "pin": st.dictionaries(st.sampled_from(MODELS), st.just("17.5.1"), max_size=2),
            "download_retries": st.integers(0, 100)}),
    }).flatmap(lambda c: st.lists(st.integers(*BCM_PINS).filter(
        lambda p: p not in c["buttons"].values()), unique=True, max_size=7).map(
        lambda pins: {**c, "leds": {"pins": pins}}))


@fuzz(100)
@given(data=st.data())
def test_a_valid_config_loads(capsys, data):
    with bench() as (directory, config):
        config.write_text(document(data.draw(valid_config(directory), label="config")))
        assert_loaded(check(capsys, directory, config), config)
        assert not (directory / "state").exists()


@st.composite
def mutated(draw: st.DrawFn, original: bytes) -> bytes:
    """Bytes flipped, cut out, put in, or the file cut short."""
    text = bytearray(original)
    for _ in range(draw(st.integers(1, 4))):
        where = draw(st.integers(0, len(text)))
        kind = draw(st.sampled_from(["flip", "cut", "insert", "truncate"]))
        if kind == "flip" and where < len(text):
            text[where] = draw(st.integers(0, 255))
        elif kind == "cut":
            del text[where:where + draw(st.integers(1, 40))]
        elif kind == "insert":
            text[where:where] = draw(st.one_of(st.binary(min_size=1, max_size=8), st.sampled_from(
                [b"[", b"]", b"=", b'"', b"\n", b"-", b"nan", b"inf", b"~", b"\x00", b"[[phone]]\n",
                 b"[" * 3000, b"\xff", b"99", b"-1", b"true"])))
        else:
            del text[where:]
    return bytes(text)


@fuzz(200)
@given(data=st.data(), original=st.sampled_from(SHIPPED_CONFIGS))
def test_a_mutated_or_random_config_loads_or_is_one_line(capsys, data, original):
    with bench() as (directory, config):
        content = data.draw(st.one_of(mutated(original.read_bytes()), st.binary(max_size=200)), label="bytes")
        config.write_bytes(content)
        before = snapshot(directory)
        result = check(capsys, directory, config)
        if result[0] == 0:
            assert_loaded(result, config)
            assert snapshot(directory) == before
        else:
            assert_refused(result, before, directory)


@fuzz(16)
@given(depth=st.integers(50, 6000), shape=st.sampled_from(["array", "table"]),
       key=st.sampled_from([("leds", "pins"), ("hub", "ports"), ("station", "id")]))
def test_deep_nesting_is_one_line(capsys, depth, shape, key):
    with bench() as (directory, config):
        nested = "[" * depth + "]" * depth if shape == "array" else "{ a = " * depth + "1" + " }" * depth
        config.write_text(f"[{key[0]}]\n{key[1]} = {nested}\n")
        before = snapshot(directory)
        assert_refused(check(capsys, directory, config), before, directory)


# -- scenario files -------------------------------------------------------------------------------

PHASES = list(scenarios.PHASES)


NAMES = st.text(st.one_of(st.characters(categories=["L", "N", "P"]), st.just(" ")), min_size=1, max_size=12)


def valid_phone(slot: int) -> st.SearchStrategy[dict[str, Any]]:
    return st.tuples(st.floats(0, 1000), st.floats(0, 1000)).flatmap(lambda times: st.fixed_dictionaries(
        {"name": NAMES,
         "slot": st.just(slot), "attach": st.just(min(times))},
        optional={
            "detach": st.just(max(times)), "model": st.sampled_from(MODELS),
            "ios": st.sampled_from(["17.5.1", "18.0", "16.7.8"]),
            "mode": st.sampled_from(["normal", "recovery", "dfu"]),
            "find_my": st.booleans(), "pairing": st.sampled_from(["auto", "dialog", "passcode", "denied"]),
            "serial": st.from_regex(r"\A[A-Z0-9]{8,14}\Z"), "ecid": st.integers(1, 2**64 - 1),
            "fail": st.fixed_dictionaries({}, optional={
                "phase": st.sampled_from(PHASES), "percent": st.floats(0, 100), "times": st.integers(1, 100),
                "kind": st.sampled_from(["network", "usb", "device_rejected", "timeout"])}),
            "expect": st.sampled_from(["", "done", "locked", "failed"]),
            "activation_ready_after": st.floats(0, 3600), "lockdown_stalls": st.booleans(),
            "usb3": st.booleans(), "vanish_on_scan": st.integers(0, 100)}))


def valid_scenario() -> st.SearchStrategy[dict[str, Any]]:
    at = st.floats(0, 86400)
    return st.fixed_dictionaries({
        "scenario": st.fixed_dictionaries({}, optional={
            "description": st.text(max_size=30), "duration": st.floats(0, 86400),
            "usbmuxd": st.sampled_from(["on-demand", "always"])}),
        "phone": st.lists(st.integers(1, HUB_SLOTS), unique=True, max_size=HUB_SLOTS).flatmap(
            lambda slots: st.tuples(*map(valid_phone, slots)).map(list)),
        "press": st.lists(st.fixed_dictionaries({"at": at, "button": st.sampled_from(["select", "ok", "back"])},
                                                optional={"long": st.booleans(),
                                                          "slot": st.integers(1, HUB_SLOTS)}), max_size=3),
        "network": st.lists(st.fixed_dictionaries({"at": at, "up": st.booleans()}), max_size=2),
        "usbmuxd": st.lists(st.fixed_dictionaries({"at": at, "running": st.booleans()}), max_size=2),
    })


def scenario_document(tables: dict[str, Any]) -> str:
    return document({k: v for k, v in tables.items() if v != [] and v != {}})


@fuzz(100)
@given(tables=valid_scenario())
def test_a_valid_scenario_loads(capsys, tables):
    with bench() as (directory, config):
        path = directory / "scenario.toml"
        path.write_text(scenario_document(tables))
        assert_loaded(check(capsys, directory, config, path), config, path)


SCENARIO_TABLES = {"scenario": scenarios.ScenarioInfo, "phone": scenarios.ScenarioPhone,
                   "press": scenarios.ScenarioPress, "network": scenarios.NetworkChange,
                   "usbmuxd": scenarios.UsbmuxdChange}
BASE_SCENARIO = {"scenario": {}, "phone": [{"name": "a", "slot": 1}],
                 "press": [{"at": 1, "button": "ok"}], "network": [{"at": 1, "up": False}],
                 "usbmuxd": [{"at": 1, "running": False}]}


def wrong_scenario(directory: Path) -> st.SearchStrategy[dict[str, Any]]:
    keys = [(table, *f) for table, cls in SCENARIO_TABLES.items() for f in fields_of(cls)]

    def with_key(choice: tuple[str, str, Any, Any]) -> st.SearchStrategy[dict[str, Any]]:
        table, key, hint, bounds = choice
        return wrong_value(hint, bounds, []).map(lambda v: _scenario_with(table, key, v))

    phone = {"name": "a", "slot": 1}
    special = st.one_of(
        st.sampled_from([{**phone, "model": "iPhone42,1"}, {**phone, "model": "Pixel"}, {**phone, "ios": "17"},
                         {**phone, "serial": "lower-case"}, {**phone, "name": "two\nlines"}, {**phone, "name": ""},
                         {**phone, "fail": {"phase": "nowhere"}}, {**phone, "attach": 5, "detach": 4},
                         {**phone, "activation_lock": True, "activation_answer": "record"}]).map(
            lambda bad: {**BASE_SCENARIO, "phone": [bad]}),
        st.just({**BASE_SCENARIO, "phone": [phone, {"name": "b", "slot": 1}]}),  # both plugged at once
        st.integers(HUB_SLOTS + 1, 64).flatmap(lambda s: st.sampled_from(
            [_scenario_with("phone", "slot", s), _scenario_with("press", "slot", s)])),
        st.sampled_from([{"config": {"restore": {"mode": "turbo"}}}, {"config": {"nope": {}}}, {"config": 3},
                         {"phones": {"x": 1}}, {"phone": [1]}]).map(lambda extra: {**BASE_SCENARIO, **extra}),
    )
    unknown = st.tuples(st.sampled_from(list(SCENARIO_TABLES)), st.text(min_size=1, max_size=10), scalars)
    unknown = unknown.filter(lambda t: t[1] not in {f[0] for f in fields_of(SCENARIO_TABLES[t[0]])}).map(
        lambda t: _scenario_with(*t))
    return st.one_of(st.sampled_from(keys).flatmap(with_key), special, unknown)


def _scenario_with(table: str, key: str, value: Any) -> dict[str, Any]:
    tables = {k: [dict(b) for b in v] if isinstance(v, list) else dict(v) for k, v in BASE_SCENARIO.items()}
    target = tables[table][0] if isinstance(tables[table], list) else tables[table]
    target[key] = value
    return tables


@fuzz(300)
@given(data=st.data())
def test_a_wrong_scenario_is_one_line_and_changes_nothing(capsys, data):
    with bench() as (directory, config):
        path = directory / "scenario.toml"
        path.write_text(scenario_document(data.draw(wrong_scenario(directory), label="scenario")))
        before = snapshot(directory)
        assert_refused(check(capsys, directory, config, path), before, directory)


@fuzz(200)
@given(data=st.data(), original=st.sampled_from(SHIPPED_SCENARIOS))
def test_a_mutated_or_random_scenario_loads_or_is_one_line(capsys, data, original):
    with bench() as (directory, config):
        path = directory / "scenario.toml"
        path.write_bytes(data.draw(st.one_of(mutated(original.read_bytes()), st.binary(max_size=200)),
                                   label="bytes"))
        before = snapshot(directory)
        result = check(capsys, directory, config, path)
        if result[0] == 0:
            assert_loaded(result, config, path)
            assert snapshot(directory) == before
        else:
            assert_refused(result, before, directory)


@fuzz(25)
@given(data=st.data())
def test_the_real_run_refuses_what_the_check_refuses(capsys, data):
    """Not only --check: `station run --sim` itself stops with the same one line."""
    with bench() as (directory, config):
        path = directory / "scenario.toml"
        path.write_text(scenario_document(data.draw(wrong_scenario(directory), label="scenario")))
        before = snapshot(directory)
        checked = check(capsys, directory, config, path)
        ran = station(capsys, ["run", "--config", str(config), "--sim", str(path), "--duration", "0.001"])
        assert_refused(ran, before, directory)
        assert ran == checked


def test_the_toml_writer_round_trips():
    value = {"a": ["x\"\\\n\x7f\u00e9\U0001F600", 1, -2.5, True, {"b c": []}], "d": math.inf}
    assert tomllib.loads(f"v = {dump(value)}\n")["v"] == value
