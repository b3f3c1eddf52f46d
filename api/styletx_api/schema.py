"""Option values <-> `styletx.v1.StyleOptions` fields, driven by the proto's own descriptor.

The proto is the API's truth: every conversion between Python values and option fields (the
SDK building requests, the server reading them and reporting resolved options) walks the
message descriptor instead of a hand-kept list of names. Conventions the proto follows:
- a scalar option is an `optional` field (presence tells "unset" from zero);
- a list option is a `repeated` field (empty means unset);
- a choice is an enum `Foo` whose values are `FOO_<CHOICE>`, `FOO_UNSPECIFIED = 0` meaning unset;
  in Python the choice is the lower-case `<choice>` (`INIT_METHOD_CONTENT` <-> "content").
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Final

from google.protobuf.descriptor import EnumDescriptor, FieldDescriptor
from google.protobuf.message import Message

from .v1 import style_transfer_pb2 as pb

OPTION_FIELDS: Final[tuple[FieldDescriptor, ...]] = tuple(pb.StyleOptions.DESCRIPTOR.fields)
OPTION_NAMES: Final[tuple[str, ...]] = tuple(f.name for f in OPTION_FIELDS)


def _enum_prefix(enum: EnumDescriptor) -> str:
    """`InitMethod` -> `INIT_METHOD_` (buf's ENUM_VALUE_PREFIX rule)."""
    return re.sub(r"(?<!^)(?=[A-Z])", "_", enum.name).upper() + "_"


def enum_choices(enum: EnumDescriptor) -> dict[str, int]:
    """Python choice -> enum number for every value but UNSPECIFIED (`{"random": 1, ...}`)."""
    prefix = _enum_prefix(enum)
    return {
        value.name.removeprefix(prefix).lower(): value.number
        for value in enum.values
        if value.number != 0
    }


def enum_choice(enum: EnumDescriptor, number: int) -> str | None:
    """The Python choice of enum value `number`; None for UNSPECIFIED or an unknown number."""
    for choice, value in enum_choices(enum).items():
        if value == number:
            return choice
    return None


def enum_number(enum: EnumDescriptor, choice: str, option: str) -> int:
    """The enum number of a Python choice; ValueError naming the option and the choices."""
    choices = enum_choices(enum)
    if choice not in choices:
        allowed = ", ".join(repr(c) for c in choices)
        raise ValueError(f"{option} must be one of {allowed}, not {choice!r}")
    return choices[choice]


def is_list(field: FieldDescriptor) -> bool:
    return bool(field.is_repeated)


def is_set(message: Message, field: FieldDescriptor) -> bool:
    """Whether an option field carries a value (presence, non-empty list, non-zero enum)."""
    if is_list(field):
        return len(getattr(message, field.name)) > 0
    if field.enum_type is not None:
        return int(getattr(message, field.name)) != 0
    return message.HasField(field.name)


def read_options(message: Message) -> dict[str, Any]:
    """The set fields of a StyleOptions message as Python values (enums as choices, lists as
    tuples); an enum number this build does not know is returned as the int itself."""
    values: dict[str, Any] = {}
    for field in OPTION_FIELDS:
        if not is_set(message, field):
            continue
        value = getattr(message, field.name)
        if is_list(field):
            values[field.name] = tuple(value)
        elif field.enum_type is not None:
            values[field.name] = enum_choice(field.enum_type, int(value)) or int(value)
        else:
            values[field.name] = value
    return values


def write_options(message: Message, values: Mapping[str, Any]) -> None:
    """Set the StyleOptions fields named in `values` (others are ignored); TypeError/ValueError
    name the option whose value protobuf or the enum refused."""
    for field in OPTION_FIELDS:
        if field.name not in values or values[field.name] is None:
            continue
        value = values[field.name]
        try:
            if is_list(field):
                if isinstance(value, str | bytes):
                    raise TypeError("must be a sequence of values, not one string")
                target = getattr(message, field.name)
                del target[:]
                target.extend(value)
            elif field.enum_type is not None:
                setattr(message, field.name, enum_number(field.enum_type, value, field.name))
            else:
                setattr(message, field.name, value)
        except (TypeError, ValueError) as error:
            text = str(error)
            prefix = "" if text.startswith(field.name) else f"{field.name}: "
            raise type(error)(prefix + text) from None


__all__ = [
    "OPTION_FIELDS",
    "OPTION_NAMES",
    "enum_choice",
    "enum_choices",
    "enum_number",
    "is_set",
    "read_options",
    "write_options",
]
