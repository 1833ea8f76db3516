"""Validation errors in the seed's (Joi's) words: `"to" is required`, not pydantic's.

The seed's clients match on these messages, so every request model reports its errors this
way: the JSON name of the field in double quotes, then what is wrong with it.
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import ValidationError
from pydantic_core import ErrorDetails, PydanticCustomError

E164 = re.compile(r"\+[1-9]\d{1,14}")
_QUOTED = re.compile(r"'([^']*)'")

# pydantic error type -> Joi's wording for it ("ctx" values fill the braces).
_MESSAGES: dict[str, str] = {
    "missing": "is required",
    "int_type": "must be a number",
    "int_parsing": "must be a number",
    "int_parsing_size": "must be a safe number",
    "int_from_float": "must be an integer",
    "float_type": "must be a number",
    "float_parsing": "must be a number",
    "string_type": "must be a string",
    "string_too_short": "length must be at least {min_length} characters long",
    "string_too_long": "length must be less than or equal to {max_length} characters long",
    "string_pattern_mismatch": "has an invalid format",
    "greater_than": "must be greater than {gt}",
    "greater_than_equal": "must be greater than or equal to {ge}",
    "less_than_equal": "must be less than or equal to {le}",
    "list_type": "must be an array",
    "too_short": "must contain at least {min_length} items",
    "too_long": "must contain less than or equal to {max_length} items",
    "model_type": "must be of type object",
    "model_attributes_type": "must be of type object",
    "dict_type": "must be of type object",
    "bool_type": "must be a boolean",
    "bool_parsing": "must be a boolean",
    "literal_error": "must be one of [{expected}]",
    "enum": "must be one of [{expected}]",
    "extra_forbidden": "is not allowed",
    "url_parsing": "must be a valid uri",
    "url_scheme": "must be a valid uri",
}


def joi_messages(error: ValidationError) -> list[str]:
    """One Joi-style message per problem, in the order of the model's fields."""
    return [_message(detail) for detail in error.errors(include_url=False)]


def _message(detail: ErrorDetails) -> str:
    path = _path(detail["loc"])
    if detail["type"] == "joi":  # raised by our own validators, already in Joi's words
        text = detail["msg"]
    elif detail["type"] == "string_too_short" and (detail.get("ctx") or {}).get("min_length") == 1:
        text = "is not allowed to be empty"
    else:
        template = _MESSAGES.get(detail["type"])
        ctx = dict(detail.get("ctx") or {})
        if "expected" in ctx:
            # pydantic says "'a', 'b' or 'c'"; Joi lists the choices as [a, b, c].
            ctx["expected"] = _QUOTED.sub(r"\1", str(ctx["expected"])).replace(" or ", ", ")
        text = template.format(**ctx) if template else "is invalid"
    if not path:
        return "Request body " + text.replace("must be of type object", "must be a JSON object")
    return f'"{path}" {text}'


def _path(loc: tuple[int | str, ...]) -> str:
    """Joi's label for a nested field: fields[0].name."""
    text = ""
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else part
    return text


def joi_error(message: str) -> PydanticCustomError:
    """An error for a custom validator, reported as `"<field>" <message>`."""
    return PydanticCustomError("joi", message)


def e164(value: str) -> str:
    if not E164.fullmatch(value):
        raise joi_error("must be a valid E.164 phone number")
    return value


def not_bool(value: Any) -> Any:
    """Joi's number() refuses true and false, where pydantic would read them as 1 and 0."""
    if isinstance(value, bool):
        raise joi_error("must be a number")
    return value


def empty_as_none(value: Any) -> Any:
    """`?status=` in a query string means no filter, not an invalid status."""
    return None if value == "" else value
