"""The functions the model may call, and what each one does to the records.

- `confirm_field(field, value)`: the customer stated a detail. Highway compares it with the
  value on file (ignoring case, spaces and punctuation) and stores what was heard. The
  model learns only "confirmed" or "mismatch", never the value on file.
- `finish_verification(outcome)`: the verdict. "verified" needs every field confirmed.
- `end_call(reason)`: hang up once the goodbye has played.

A tool's problems (bad arguments, an unknown field) go back to the model as
`{"error": ...}` so it can correct itself; they never end the call.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson

from highway.store import Outcome, Store, UnknownField, Verification

__all__ = ["TOOLS", "ToolResult", "run_tool"]

_OUTCOMES = [o.value for o in Outcome if o is not Outcome.UNREACHABLE]

TOOLS: tuple[dict[str, Any], ...] = (
    {
        "type": "function",
        "name": "confirm_field",
        "description": (
            "Record the value the customer stated for one detail. Returns whether it matches"
            " the record: 'confirmed' or 'mismatch'."
        ),
        "parameters": {
            "type": "object",
            "properties": {
                "field": {"type": "string", "description": "The detail's name, as listed."},
                "value": {
                    "type": "string",
                    "description": "What the customer said, in the format given for the detail.",
                },
            },
            "required": ["field", "value"],
        },
    },
    {
        "type": "function",
        "name": "finish_verification",
        "description": "Record the verification's outcome once it is decided.",
        "parameters": {
            "type": "object",
            "properties": {
                "outcome": {
                    "type": "string",
                    "enum": _OUTCOMES,
                    "description": (
                        "verified: every detail confirmed; mismatch: a detail did not match;"
                        " incomplete: the customer could not give every detail; declined: the"
                        " customer refused."
                    ),
                },
            },
            "required": ["outcome"],
        },
    },
    {
        "type": "function",
        "name": "end_call",
        "description": "Hang up after your goodbye. Say goodbye first, in the same turn.",
        "parameters": {
            "type": "object",
            "properties": {"reason": {"type": "string", "description": "Why the call ends."}},
            "required": ["reason"],
        },
    },
)


@dataclass(frozen=True, slots=True)
class ToolResult:
    """A tool's output for the model, what to store, and whether to hang up."""

    output: dict[str, Any]
    record: dict[str, Any] = field(default_factory=dict)
    hang_up: str | None = None  # the reason, for end_call

    @property
    def output_json(self) -> str:
        return orjson.dumps(self.output).decode()


async def run_tool(
    store: Store, verification: Verification | None, name: str, arguments: str
) -> ToolResult:
    """Run tool `name` with the model's JSON `arguments` for this call's verification."""
    try:
        args = orjson.loads(arguments or "{}")
    except orjson.JSONDecodeError:
        return _error(name, args=None, message="arguments are not valid JSON")
    if not isinstance(args, dict):
        return _error(name, args, "arguments must be a JSON object")
    if name == "end_call":
        reason = str(args.get("reason") or "agent ended the call")
        output = {"ok": True, "note": "The call ends when your goodbye has played."}
        return ToolResult(output, _record(name, args, output), hang_up=reason)
    if name not in ("confirm_field", "finish_verification"):
        return _error(name, args, f"unknown function {name!r}")
    if verification is None:
        return _error(name, args, "this call has no verification")
    if name == "confirm_field":
        return await _confirm_field(store, verification, args)
    return await _finish_verification(store, verification, args)


async def _confirm_field(
    store: Store, verification: Verification, args: dict[str, Any]
) -> ToolResult:
    name, value = args.get("field"), args.get("value")
    if not isinstance(name, str) or not isinstance(value, str):
        return _error("confirm_field", args, "'field' and 'value' must be strings")
    expected = next((f.expected for f in verification.fields if f.name == name), None)
    confirmed = expected is not None and _comparable(expected) == _comparable(value)
    try:
        await store.confirm_field(verification.id, name, heard=value, confirmed=confirmed)
    except UnknownField:
        known = ", ".join(f.name for f in verification.fields)
        return _error("confirm_field", args, f"unknown field {name!r}; the fields are {known}")
    output = {"field": name, "status": "confirmed" if confirmed else "mismatch"}
    return ToolResult(output, _record("confirm_field", args, output))


async def _finish_verification(
    store: Store, verification: Verification, args: dict[str, Any]
) -> ToolResult:
    try:
        outcome = Outcome(args.get("outcome"))
    except ValueError:
        return _error("finish_verification", args, f"'outcome' must be one of {_OUTCOMES}")
    current = await store.get_verification(verification.id)
    fields = current.fields if current else verification.fields
    unconfirmed = [f.name for f in fields if f.status != "confirmed"]
    if outcome is Outcome.VERIFIED and unconfirmed:
        message = f"not every field is confirmed: {', '.join(unconfirmed)}"
        return _error("finish_verification", args, message)
    await store.finish_verification(verification.id, outcome)
    output = {"ok": True, "outcome": outcome.value}
    return ToolResult(output, _record("finish_verification", args, output))


def _comparable(text: str) -> str:
    """What must match: letters and digits, case-folded. "1815-12-10" == "18151210"."""
    return "".join(c for c in text.casefold() if c.isalnum())


def _record(name: str, args: Any, output: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "arguments": args, "result": output}


def _error(name: str, args: Any, message: str) -> ToolResult:
    output = {"error": message}
    return ToolResult(output, _record(name, args, output))
