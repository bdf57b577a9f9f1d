"""Property tests of the executor's parameter parsing: any input is a value or a UsageError
(never another exception), and values that can be written round-trip."""

from __future__ import annotations

import contextlib
import shlex

import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from executor import options as optionslib
from executor import params as paramlib
from jobcommon.errors import UsageError

SETTINGS = settings(max_examples=200, deadline=None)
names = st.from_regex(r"[a-z_][a-z0-9_]{0,10}", fullmatch=True)
scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text()


@SETTINGS
@given(st.text())
def test_cli_values_convert_without_raising(text):
    value = paramlib.convert_cli_value(text)
    assert isinstance(value, bool | int | float | str | type(None))


@SETTINGS
@given(st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.booleans())
def test_cli_values_round_trip(value):
    assert paramlib.convert_cli_value(str(value)) == value


@SETTINGS
@given(st.text())
def test_any_yaml_text_is_a_mapping_or_a_usage_error(text):
    try:
        out = paramlib.load_yaml_mapping(text, "-y")
    except UsageError:
        return
    assert isinstance(out, dict) and all(isinstance(k, str) for k in out)


@SETTINGS
@given(st.dictionaries(names, scalars, max_size=6))
def test_yaml_mappings_round_trip(mapping):
    assert paramlib.load_yaml_mapping(yaml.safe_dump(mapping), "-y") == mapping


@SETTINGS
@given(scalars, st.sampled_from([int, float, str, bool, list, dict, None]), st.booleans())
def test_coercion_gives_the_declared_type_or_a_usage_error(value, kind, from_cli):
    raw = str(value) if from_cli else None
    given_value = paramlib.Given(paramlib.convert_cli_value(raw) if from_cli else value, raw)
    try:
        out = paramlib.coerce("p", given_value, kind)
    except UsageError:
        return
    if kind in (int, float, str, bool) and given_value.value is not None:
        assert type(out) is kind


@SETTINGS
@given(st.text())
def test_vm_parameters_metadata_parses_or_is_a_usage_error(text):
    with contextlib.suppress(UsageError):
        optionslib.parse_parameters(text)


values = st.text().filter(lambda v: not v.startswith("-") and "\x00" not in v)


@SETTINGS
@given(
    st.lists(st.tuples(names, values), max_size=4), st.lists(st.tuples(names, values), max_size=3)
)
def test_vm_parameters_round_trip_through_shell_quoting(params, raw):
    text = " ".join(
        [f"-p {shlex.quote(n)} {shlex.quote(v)}" for n, v in params]
        + [f"-r {shlex.quote(n)} {shlex.quote(v)}" for n, v in raw]
    )
    parsed = optionslib.parse_parameters(text)
    assert [tuple(p) for p in parsed.parameters] == params
    assert [tuple(p) for p in parsed.parameters_raw] == raw
