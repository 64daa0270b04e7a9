"""cmap value types: corosync's numbering, short names, ranges, parsing and the cmapctl dump line.

Pure and small on purpose: the config parser, the cmap service and ``pycorosync cmapctl`` all use these.
"""

from __future__ import annotations

import re
from enum import IntEnum

__all__ = [
    "INTEGER_RANGES",
    "SHORT_NAMES",
    "Value",
    "ValueType",
    "check_range",
    "format_binary",
    "format_entry",
    "format_value",
    "parse_int",
    "parse_value",
    "type_from_short_name",
]

# a value held in cmap: ints for the integer types, float for flt/dbl, str, bytes for bin
Value = int | float | str | bytes


class ValueType(IntEnum):
    """``cmap_value_types_t``: the numbers travel on the wire, keep them."""

    INT8 = 1
    UINT8 = 2
    INT16 = 3
    UINT16 = 4
    INT32 = 5
    UINT32 = 6
    INT64 = 7
    UINT64 = 8
    FLOAT = 9
    DOUBLE = 10
    STRING = 11
    BINARY = 12

    @property
    def short_name(self) -> str:
        """The name corosync-cmapctl prints and accepts (``u32``, ``str``...)."""
        return SHORT_NAMES[self]

    @property
    def is_integer(self) -> bool:
        """True for the eight integer types (the ones cmap_inc/cmap_dec accept)."""
        return self in INTEGER_RANGES


SHORT_NAMES: dict[ValueType, str] = {
    ValueType.INT8: "i8",
    ValueType.UINT8: "u8",
    ValueType.INT16: "i16",
    ValueType.UINT16: "u16",
    ValueType.INT32: "i32",
    ValueType.UINT32: "u32",
    ValueType.INT64: "i64",
    ValueType.UINT64: "u64",
    ValueType.FLOAT: "flt",
    ValueType.DOUBLE: "dbl",
    ValueType.STRING: "str",
    ValueType.BINARY: "bin",
}
_BY_SHORT_NAME = {name: vt for vt, name in SHORT_NAMES.items()}

INTEGER_RANGES: dict[ValueType, tuple[int, int]] = {
    ValueType.INT8: (-(2**7), 2**7 - 1),
    ValueType.UINT8: (0, 2**8 - 1),
    ValueType.INT16: (-(2**15), 2**15 - 1),
    ValueType.UINT16: (0, 2**16 - 1),
    ValueType.INT32: (-(2**31), 2**31 - 1),
    ValueType.UINT32: (0, 2**32 - 1),
    ValueType.INT64: (-(2**63), 2**63 - 1),
    ValueType.UINT64: (0, 2**64 - 1),
}

# what strtoll/strtoull accept once the value is trimmed: optional sign, decimal digits
_DECIMAL = re.compile(r"[+-]?[0-9]+")


def type_from_short_name(name: str) -> ValueType:
    """``"u32"`` -> ``ValueType.UINT32``; ValueError naming the bad type otherwise."""
    try:
        return _BY_SHORT_NAME[name]
    except KeyError:
        raise ValueError(f"Unknown type {name}") from None


def check_range(value_type: ValueType, value: int) -> bool:
    """True if ``value`` fits ``value_type`` (an integer type)."""
    low, high = INTEGER_RANGES[value_type]
    return low <= value <= high


def parse_int(text: str) -> int | None:
    """Decimal integer as corosync's safe_atoq reads it (sign allowed, nothing else); None if not one."""
    if not _DECIMAL.fullmatch(text):
        return None
    return int(text, 10)


def parse_value(value_type: ValueType, text: str) -> Value:
    """Parse ``text`` into a value of ``value_type``; ValueError with cmapctl's wording on bad input."""
    name = value_type.short_name
    if value_type in INTEGER_RANGES:
        number = parse_int(text.strip())
        if number is None:
            raise ValueError(f"{text} is not valid {name} type value")
        if not check_range(value_type, number):
            raise ValueError(f"{text} is not valid {name} integer")
        return number
    if value_type in (ValueType.FLOAT, ValueType.DOUBLE):
        try:
            return float(text)
        except ValueError:
            raise ValueError(f"{text} is not valid {name} type value") from None
    if value_type is ValueType.BINARY:
        return text.encode("utf-8", "surrogateescape")
    return text


def format_binary(data: bytes) -> str:
    """cmapctl -b rendering: printable ASCII as is, ``\\`` doubled, anything else ``\\xNN``, empty ``*empty*``."""
    if not data:
        return "*empty*"
    out: list[str] = []
    for byte in data:
        if byte == 0x5C:
            out.append("\\\\")
        elif 0x20 <= byte < 0x7F:
            out.append(chr(byte))
        else:
            out.append(f"\\x{byte:02X}")
    return "".join(out)


def format_value(value_type: ValueType, value: Value) -> str:
    """The text after ``= `` in a dump line (floats ``%f`` like C's printf)."""
    if value_type in (ValueType.FLOAT, ValueType.DOUBLE):
        return f"{float(value):f}"
    if value_type is ValueType.BINARY:
        data = value if isinstance(value, bytes) else str(value).encode("utf-8", "surrogateescape")
        return format_binary(data)
    if isinstance(value, bytes):
        return value.decode("utf-8", "surrogateescape")
    return str(value)


def format_entry(key: str, value_type: ValueType, value: Value, show_binary: bool = False) -> str:
    """One line of ``corosync-cmapctl`` output: ``totem.token (u32) = 3000``; binary values only with -b."""
    if value_type is ValueType.BINARY and not show_binary:
        return f"{key} (bin)"
    return f"{key} ({value_type.short_name}) = {format_value(value_type, value)}"
