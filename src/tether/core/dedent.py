"""Smart unindent for `tether send`: make a selection of Python lines runnable on its own.

Pure functions, standard library only.

- The common indentation is removed (tabs and spaces alike: the common *prefix* of the
  indentation strings goes, so mixed files keep their relative structure).
- A selection whose first line is less indented than the rest (it started mid-line, after
  the indentation) is handled as PyCharm does: the first line is given the indentation it
  really had in the file, inferred from the lines below it, before the common part is
  removed.
- Blank lines inside the selection are kept (empty, so IPython parses them); blank lines
  at either end are dropped; comment-only lines never decide the indentation.
- The result ends with a newline, which closes a trailing block.
"""

from __future__ import annotations

# No `re`: `tether send` imports this on every keypress (re and enum cost ~6 ms there).


class RangeError(ValueError):
    """A FILE:START-END spec that cannot be used."""


def _indent(line: str) -> str:
    return line[: len(line) - len(line.lstrip(" \t"))]


def _is_comment(line: str) -> bool:
    return line.lstrip(" \t").startswith("#")


def _opens_block(line: str) -> bool:
    """True if the line (minus a trailing comment: a `#` after the last quote) ends with ':'."""
    text = line.rstrip()
    hash_at = text.find("#", max(text.rfind("'"), text.rfind('"')) + 1)
    if hash_at >= 0:
        text = text[:hash_at].rstrip()
    return text.endswith(":")


def _common_prefix(indents: list[str]) -> str:
    if not indents:
        return ""
    first = min(indents)
    last = max(indents)
    size = 0
    while size < len(first) and size < len(last) and first[size] == last[size]:
        size += 1
    return first[:size]


def smart_dedent(text: str) -> str:
    """The selection with its common indentation removed (see the module docstring)."""
    lines = [line.rstrip("\r\n") for line in text.splitlines()]
    lines = ["" if not line.strip() else line.rstrip() for line in lines]
    while lines and not lines[0]:
        lines.pop(0)
    while lines and not lines[-1]:
        lines.pop()
    if not lines:
        return ""
    code = [i for i, line in enumerate(lines) if line and not _is_comment(line)]
    if not code:
        code = [i for i, line in enumerate(lines) if line]
    indents = {i: _indent(lines[i]) for i in code}
    first = code[0]
    rest = code[1:]
    if rest and len(indents[first]) < min(len(indents[i]) for i in rest):
        indents[first] = _header_indent(lines, first, rest, indents)
        lines[first] = indents[first] + lines[first].lstrip(" \t")
    common = _common_prefix([indents[i] for i in code])
    out = []
    for line in lines:
        if line.startswith(common):
            out.append(line[len(common) :])
        else:  # a comment (or a stray line) less indented than the code: strip what it has
            out.append(line[len(_common_prefix([_indent(line), common])) :])
    return "\n".join(out) + "\n"


def _header_indent(lines: list[str], first: int, rest: list[int], indents: dict[int, str]) -> str:
    """The indentation the first (mid-line selected) line had in the file."""
    below = indents[rest[0]]
    if _opens_block(lines[first]):
        # Its body is `below`; a later line less indented than the body is the header's
        # sibling (or outer): the deepest of those is the header's own level.
        shallower = [indents[i] for i in rest if len(indents[i]) < len(below)]
        if shallower:
            return max(shallower, key=len)
        return min((indents[i] for i in rest), key=len)[: len(_indent(lines[first]))]
    # A plain statement (or the start of a bracketed expression): a sibling of the rest.
    return min((indents[i] for i in rest), key=len)


def parse_spec(spec: str) -> tuple[str, int | None, int | None]:
    """FILE, FILE:LINE or FILE:START-END -> (file, start, end); lines count from 1.

    A suffix that is not digits belongs to the file name (so `C:x` or `a:b.py` work).
    """
    file, sep, suffix = spec.rpartition(":")
    if not sep or not file:
        return spec, None, None
    first, dash, second = suffix.partition("-")
    if not first.isdecimal() or (dash and not second.isdecimal()):
        if suffix and all(char.isdecimal() or char == "-" for char in suffix):
            raise RangeError(
                f"bad line range {suffix!r} in {spec!r}: use FILE:LINE or FILE:START-END"
            )
        return spec, None, None
    start = int(first)
    end = int(second) if dash else start
    if start < 1 or end < start:
        raise RangeError(
            f"bad line range {suffix!r} in {spec!r}: lines count from 1 and START <= END"
        )
    return file, start, end


def select_lines(text: str, start: int | None, end: int | None, name: str = "file") -> str:
    """Lines START..END (1-based, inclusive) of text; END past the end is clamped."""
    if start is None:
        return text
    lines = text.splitlines(keepends=True)
    if start > len(lines):
        raise RangeError(f"{name} has {len(lines)} lines; line {start} does not exist")
    return "".join(lines[start - 1 : end])
