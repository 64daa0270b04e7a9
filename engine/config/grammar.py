"""corosync.conf syntax: lines into a tree of sections and ``key: value`` items (coroparse's rules).

Only the shape is checked here; which sections and keys exist, and their types, is ``schema``'s business.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .errors import ConfigError

__all__ = ["ICMAP_KEYNAME_MAXLEN", "LINE_MAX_BYTES", "Item", "Section", "parse_tree"]

# coroparse reads with fgets into char[512]: 510 characters plus the newline fit
LINE_MAX_BYTES = 510
ICMAP_KEYNAME_MAXLEN = 256

# what coroparse strips: blanks, tabs, CR and a stray Latin-1 no-break space (0xA0, or its
# undecodable-byte stand-in when the file is not valid UTF-8)
_TRAILING_BLANKS = " \t\r\xa0\udca0"
_LEADING_BLANKS = " \t\xa0\udca0"


@dataclass(frozen=True)
class Item:
    """One ``key: value`` line."""

    key: str
    value: str
    line: int


@dataclass
class Section:
    """``name {`` ... ``}``: items and subsections in file order."""

    name: str
    line: int
    path: str
    entries: list[Item | Section] = field(default_factory=list)

    @property
    def items(self) -> list[Item]:
        """The ``key: value`` lines directly in this section."""
        return [e for e in self.entries if isinstance(e, Item)]

    @property
    def sections(self) -> list[Section]:
        """The sections directly nested in this one."""
        return [e for e in self.entries if isinstance(e, Section)]


def _byte_len(text: str) -> int:
    return len(text.encode("utf-8", "surrogateescape"))


def _strip_name(text: str) -> str:
    # remove_whitespace(s, 1): blanks on both ends, and trailing ':' / '{' on a name
    return text.strip(_LEADING_BLANKS).rstrip(_TRAILING_BLANKS + ":{")


def parse_tree(text: str, filename: str = "corosync.conf") -> Section:
    """Parse corosync.conf text into a root ``Section`` (name ``""``); ConfigError on a syntax error."""
    root = Section(name="", line=0, path="")
    stack: list[Section] = [root]

    def fail(reason: str, line: int) -> ConfigError:
        return ConfigError(reason, filename, line)

    for number, raw in enumerate(text.split("\n"), start=1):
        if _byte_len(raw) > LINE_MAX_BYTES:
            raise fail("Line too long", number)
        # C strings end at the first NUL
        line = raw.split("\0", 1)[0].rstrip(_TRAILING_BLANKS)
        content = line.lstrip(_LEADING_BLANKS)
        if not content or content.startswith("#"):
            continue
        current = stack[-1]
        if "{" in content:
            name_part, _, after = content.partition("{")
            name = _strip_name(name_part)
            if not name:
                raise fail("Missing section name before opening bracket '{'", number)
            if after.strip(_LEADING_BLANKS + _TRAILING_BLANKS):
                raise fail("Extra characters after opening bracket '{'", number)
            path = f"{current.path}.{name}" if current.path else name
            if _byte_len(path) >= ICMAP_KEYNAME_MAXLEN:
                raise fail("Start of section makes total cmap path too long", number)
            section = Section(name=name, line=number, path=path)
            current.entries.append(section)
            stack.append(section)
            continue
        if ":" in content:
            key_part, _, value_part = content.partition(":")
            key = _strip_name(key_part)
            value = value_part.strip(_LEADING_BLANKS + _TRAILING_BLANKS)
            if not key:
                raise fail("Key name can't be empty", number)
            full = f"{current.path}.{key}" if current.path else key
            if _byte_len(full) >= ICMAP_KEYNAME_MAXLEN:
                raise fail("New key makes total cmap path too long", number)
            current.entries.append(Item(key=key, value=value, line=number))
            continue
        if "}" in content:
            if content != "}":
                raise fail("Extra characters before or after closing bracket '}'", number)
            if len(stack) == 1:
                raise fail("Unexpected closing brace", number)
            stack.pop()
            continue
        raise fail("Line is not opening or closing section or key value", number)
    if len(stack) > 1:
        unclosed = stack[-1]
        raise ConfigError(f"Missing closing brace (section '{unclosed.path}')", filename, unclosed.line)
    return root
