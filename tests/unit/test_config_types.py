"""cmap value types: corosync's numbers and names, ranges, parsing, and corosync-cmapctl's dump line."""

from __future__ import annotations

import pytest

from pycorosync.engine.config import ValueType, check_range, format_entry, parse_value, type_from_short_name
from pycorosync.engine.config.types import format_binary


def test_value_types_keep_cmap_numbering() -> None:
    assert [(t.name, int(t)) for t in ValueType] == [
        ("INT8", 1), ("UINT8", 2), ("INT16", 3), ("UINT16", 4), ("INT32", 5), ("UINT32", 6),
        ("INT64", 7), ("UINT64", 8), ("FLOAT", 9), ("DOUBLE", 10), ("STRING", 11), ("BINARY", 12),
    ]  # fmt: skip


def test_short_names_are_cmapctls() -> None:
    assert [t.short_name for t in ValueType] == [
        "i8",
        "u8",
        "i16",
        "u16",
        "i32",
        "u32",
        "i64",
        "u64",
        "flt",
        "dbl",
        "str",
        "bin",
    ]
    assert all(type_from_short_name(t.short_name) is t for t in ValueType)
    with pytest.raises(ValueError, match="Unknown type u128"):
        type_from_short_name("u128")


@pytest.mark.parametrize(
    ("vtype", "low", "high"),
    [
        (ValueType.INT8, -128, 127),
        (ValueType.UINT8, 0, 255),
        (ValueType.INT16, -32768, 32767),
        (ValueType.UINT16, 0, 65535),
        (ValueType.INT32, -(2**31), 2**31 - 1),
        (ValueType.UINT32, 0, 2**32 - 1),
        (ValueType.INT64, -(2**63), 2**63 - 1),
        (ValueType.UINT64, 0, 2**64 - 1),
    ],
)
def test_integer_ranges_are_enforced_at_both_ends(vtype: ValueType, low: int, high: int) -> None:
    assert vtype.is_integer
    assert check_range(vtype, low) and check_range(vtype, high)
    assert not check_range(vtype, low - 1) and not check_range(vtype, high + 1)
    assert parse_value(vtype, str(high)) == high
    with pytest.raises(ValueError, match=f"is not valid {vtype.short_name} integer"):
        parse_value(vtype, str(high + 1))


def test_parse_value_rejects_non_numbers_with_cmapctls_words() -> None:
    with pytest.raises(ValueError, match=r"^3s is not valid u32 type value$"):
        parse_value(ValueType.UINT32, "3s")
    with pytest.raises(ValueError, match="is not valid dbl type value"):
        parse_value(ValueType.DOUBLE, "fast")
    assert parse_value(ValueType.DOUBLE, "0.5") == 0.5
    assert parse_value(ValueType.STRING, "x y") == "x y"
    assert parse_value(ValueType.BINARY, "ab") == b"ab"
    assert not ValueType.STRING.is_integer


@pytest.mark.parametrize(
    ("vtype", "value", "line"),
    [
        (ValueType.UINT32, 3000, "totem.token (u32) = 3000"),
        (ValueType.INT32, -1, "totem.token (i32) = -1"),
        (ValueType.UINT64, 2**64 - 1, "totem.token (u64) = 18446744073709551615"),
        (ValueType.STRING, "udpu", "totem.token (str) = udpu"),
        (ValueType.STRING, "", "totem.token (str) = "),
        (ValueType.DOUBLE, 0.0, "totem.token (dbl) = 0.000000"),
        (ValueType.FLOAT, 1.5, "totem.token (flt) = 1.500000"),
        (ValueType.BINARY, b"\x00", "totem.token (bin)"),
    ],
)
def test_format_entry_matches_cmapctl(vtype: ValueType, value: int | float | str | bytes, line: str) -> None:
    assert format_entry("totem.token", vtype, value) == line


def test_binary_values_show_with_b_escaped() -> None:
    assert format_entry("k", ValueType.BINARY, b"a\\b\x01\xff", show_binary=True) == "k (bin) = a\\\\b\\x01\\xFF"
    assert format_entry("k", ValueType.BINARY, b"", show_binary=True) == "k (bin) = *empty*"
    assert format_binary(b" ~\x7f") == " ~\\x7F"
