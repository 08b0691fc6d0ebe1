"""The Python mirror of the wire contract against the Rust side's own fixtures, without a server.

``crates/protocol/fixtures/*.json`` are what ``crates/protocol/tests/fixtures.rs`` checks the Rust
types against; here the same files are read by :class:`hyperflight.Command`, by
``hyperflight.descriptor(...)`` and by :class:`hyperflight.EndpointMetadata`. The field and kind
names of the Rust types are read from their source as well, so a key added, renamed or dropped on
either side fails here.
"""

from __future__ import annotations

import json
import re
from dataclasses import fields
from pathlib import Path
from typing import Any, Dict, List

import pyarrow.flight as flight
import pytest

import hyperflight
from hyperflight import Command, EndpointMetadata, ProtocolError

REPO = Path(__file__).resolve().parents[3]
PROTOCOL = REPO / "crates/protocol"


def fixture(name: str) -> Any:
    return json.loads((PROTOCOL / "fixtures" / name).read_text())


COMMANDS = fixture("commands.json")
METADATA = fixture("endpoint_metadata.json")


def case_id(case: Dict[str, Any]) -> str:
    return json.dumps(case["json"], ensure_ascii=False)


def descriptor_call(obj: Dict[str, Any]) -> flight.FlightDescriptor:
    """``hyperflight.descriptor`` called with the command's keys as its arguments: the table as the
    positional argument (a list becomes a pair), every other key as the keyword of the same name."""
    kwargs = dict(obj)
    args = []
    if "table" in kwargs:
        table = kwargs.pop("table")
        args.append(tuple(table) if isinstance(table, list) else table)
    return hyperflight.descriptor(*args, **kwargs)


def path_of(d: flight.FlightDescriptor) -> List[str]:
    return [p.decode() if isinstance(p, bytes) else p for p in d.path]


# --- CMD descriptors -------------------------------------------------------------------------------


@pytest.mark.parametrize("case", COMMANDS["valid"], ids=case_id)
def test_valid_command_parses_and_is_written_back_the_same(case: Dict[str, Any]) -> None:
    text = json.dumps(case["json"])
    command = Command.from_json(text)
    assert command.parts() == (case["schema"], case["name"])
    # What we write is the fixture itself (no defaults spelled out), and reads back equal.
    assert json.loads(command.to_json()) == case["json"]
    assert Command.from_json(command.to_json()) == command


@pytest.mark.parametrize("case", COMMANDS["valid"], ids=case_id)
def test_descriptor_builds_the_valid_command(case: Dict[str, Any]) -> None:
    d = descriptor_call(case["json"])
    if set(case["json"]) == {"table"}:
        # A whole table needs no command: the client sends a PATH with the same two names.
        assert d.descriptor_type == flight.DescriptorType.PATH
        assert path_of(d) == [case["schema"], case["name"]]
    else:
        assert d.descriptor_type == flight.DescriptorType.CMD
        assert json.loads(d.command) == case["json"]
        assert Command.from_json(d.command).parts() == (case["schema"], case["name"])


@pytest.mark.parametrize("case", COMMANDS["invalid"], ids=case_id)
def test_invalid_command_is_refused_naming_the_fault(case: Dict[str, Any]) -> None:
    with pytest.raises(ProtocolError) as refused:
        Command.from_json(json.dumps(case["json"]))
    assert case["says"] in str(refused.value), str(refused.value)


# The one invalid command the client's own API accepts, on purpose: a bare name is its documented
# shorthand for a table in `public`, and it goes on the wire in the array form, never bare.
SHORTHAND = {"table": "nodot"}


@pytest.mark.parametrize("case", COMMANDS["invalid"], ids=case_id)
def test_descriptor_refuses_the_invalid_command(case: Dict[str, Any]) -> None:
    if case["json"] == SHORTHAND:
        d = hyperflight.descriptor("nodot", columns=["time"])
        assert json.loads(d.command)["table"] == ["public", "nodot"]
        assert path_of(hyperflight.descriptor("nodot")) == ["public", "nodot"]
        return
    # A misspelt or missing argument is a TypeError; a bad value a ValueError (ProtocolError).
    with pytest.raises((TypeError, ValueError)):
        descriptor_call(case["json"])


def test_the_shorthand_exception_is_still_a_fixture() -> None:
    # Should the fixture go, the exception above must go with it.
    assert SHORTHAND in [case["json"] for case in COMMANDS["invalid"]]


# --- endpoint metadata -----------------------------------------------------------------------------


@pytest.mark.parametrize("case", METADATA, ids=lambda m: m["kind"])
def test_endpoint_metadata_round_trips(case: Dict[str, Any]) -> None:
    parsed = EndpointMetadata.from_json(json.dumps(case))
    assert parsed.kind in hyperflight.ENDPOINT_KINDS
    assert json.loads(parsed.to_json()) == case, "written form differs from the fixture"
    # Key order too: the Rust struct's field order, which the server writes.
    assert list(json.loads(parsed.to_json())) == list(case)


def test_endpoint_metadata_refuses_unknown_and_missing_keys() -> None:
    good = METADATA[0]
    for bad in ({**good, "chunkk": 1}, {k: v for k, v in good.items() if k != "kind"},
                {**good, "kind": "heap"}, {**good, "size_bytes": "big"}, {**good, "is_compressed": 0}):
        with pytest.raises(ProtocolError):
            EndpointMetadata.from_json(json.dumps(bad))


def rust_struct_fields(path: Path, struct: str) -> List[str]:
    """The field names of a Rust struct, in order, from its source."""
    source = path.read_text()
    body = re.search(r"pub struct " + struct + r" \{(.*?)\n\}", source, re.DOTALL)
    assert body, f"struct {struct} not found in {path}"
    return re.findall(r"^\s*pub (\w+):", body.group(1), re.MULTILINE)


def rust_enum_variants_snake_case(path: Path, enum: str) -> List[str]:
    source = path.read_text()
    body = re.search(r"pub enum " + enum + r" \{(.*?)\n\}", source, re.DOTALL)
    assert body, f"enum {enum} not found in {path}"
    names = re.findall(r"^\s*([A-Z]\w*),", body.group(1), re.MULTILINE)
    return [re.sub(r"(?<!^)([A-Z])", r"_\1", n).lower() for n in names]


def test_python_types_have_the_rust_fields_and_kinds() -> None:
    endpoint, command = PROTOCOL / "src/endpoint.rs", PROTOCOL / "src/command.rs"
    assert [f.name for f in fields(EndpointMetadata)] == rust_struct_fields(endpoint, "EndpointMetadata")
    # `from` is a Python keyword: the field is `from_`.
    assert [f.name.rstrip("_") for f in fields(Command)] == rust_struct_fields(command, "Command")
    assert list(hyperflight.ENDPOINT_KINDS) == rust_enum_variants_snake_case(endpoint, "EndpointKind")
    # Every key the fixtures use is a field (the fixtures cannot drift from the types unnoticed).
    assert {k for m in METADATA for k in m} <= {f.name for f in fields(EndpointMetadata)}
