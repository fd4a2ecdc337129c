"""Reading a file a DBA wrote (inventory, dbfleet.yaml): bytes to text, YAML to data, with lines.

Every refusal leads with `line N:` so the inventory and the config report problems the same way.
Only PyYAML's safe loader; a key given twice and aliases that expand past a bound are refused
instead of silently taking the last value or expanding a "billion laughs" file.
"""

from __future__ import annotations

import codecs
from typing import Any

import yaml

# Far more values than any inventory or config holds, far fewer than an alias bomb expands to.
MAX_VALUES = 1_000_000
_MERGE = "tag:yaml.org,2002:merge"
_INT = "tag:yaml.org,2002:int"


class FileTextError(ValueError):
    """The file cannot be read as what it claims to be; `errors` are 'line N: ...' strings."""

    def __init__(self, errors: list[str]):
        self.errors = errors
        super().__init__("\n".join(errors))


def decode(data: bytes) -> str:
    """UTF-8 (a BOM is dropped), or UTF-16/32 when a BOM says so; anything else names its line."""
    for bom, encoding in ((codecs.BOM_UTF32_LE, "utf-32-le"), (codecs.BOM_UTF32_BE, "utf-32-be"),
                          (codecs.BOM_UTF8, "utf-8"), (codecs.BOM_UTF16_LE, "utf-16-le"),
                          (codecs.BOM_UTF16_BE, "utf-16-be")):
        if data.startswith(bom):
            data, chosen = data[len(bom):], encoding
            break
    else:
        chosen = "utf-8"
    try:
        text = data.decode(chosen)
    except UnicodeDecodeError as e:
        line = data[:e.start].count(b"\n") + 1 if chosen == "utf-8" else 1
        raise FileTextError([(f"line {line}: not {chosen.upper()} text (byte {e.start + 1}); save the file as "
                             "UTF-8")]) from None
    return text  # a NUL is left to the reader: YAML refuses it with its line, CSV names the cell's field


def _line_of(exc: Exception, text: str) -> int:
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    if mark is not None:
        return mark.line + 1
    position = getattr(exc, "position", None)  # ReaderError: a character index
    return text[:position].count("\n") + 1 if isinstance(position, int) else 1


def _walk(node: yaml.Node, path: tuple, lines: dict[tuple, int], errors: list[str], seen: set[int]) -> None:
    """Record the line of every key and item; refuse keys given twice. Aliased nodes are walked once."""
    if id(node) in seen:
        return
    seen.add(id(node))
    if isinstance(node, yaml.MappingNode):
        first: dict[Any, int] = {}
        for key, value in node.value:
            if key.tag == _MERGE:
                _walk(value, path, lines, errors, seen)
                continue
            name = key.value if isinstance(key, yaml.ScalarNode) else None
            line = key.start_mark.line + 1
            if name is not None and name in first:
                errors.append(f"line {line}: {'.'.join(map(str, (*path, name)))}: given twice (also at line "
                              f"{first[name]}); say it once")
            elif name is not None:
                first[name] = line
                lines.setdefault((*path, name), line)
            _walk(value, (*path, name), lines, errors, seen)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            lines.setdefault((*path, i), item.start_mark.line + 1)
            _walk(item, (*path, i), lines, errors, seen)
    elif node.tag == _INT and len(node.value) > 4000:
        # int() refuses over 4300 digits (CVE-2020-10735) deep inside the loader, with no line.
        errors.append(f"line {node.start_mark.line + 1}: {'.'.join(map(str, path)) or 'value'}: a number of "
                      f"{len(node.value)} digits; no setting or field takes one that long")


def _expanded_size(node: yaml.Node, memo: dict[int, int]) -> int:
    if memo.get(id(node)) == 0:
        raise FileTextError([f"line {node.start_mark.line + 1}: an alias refers to the value that holds it"])
    if id(node) not in memo:
        memo[id(node)] = 0  # in progress: meeting it again below is a loop
        children = [n for pair in node.value for n in pair] if isinstance(node, yaml.MappingNode) else (
            node.value if isinstance(node, yaml.SequenceNode) else [])
        memo[id(node)] = 1 + sum(_expanded_size(c, memo) for c in children)
    return memo[id(node)]


def load(text: str) -> tuple[Any, dict[tuple, int]]:
    """(data, line of each key path and list item); FileTextError names the line of what is wrong."""
    loader = None
    try:
        loader = yaml.SafeLoader(text)  # checks the characters first: ReaderError
        node = loader.get_single_node()
        if node is None:
            return None, {}
        lines: dict[tuple, int] = {}
        errors: list[str] = []
        _walk(node, (), lines, errors, set())
        if errors:
            raise FileTextError(errors)
        if _expanded_size(node, {}) > MAX_VALUES:
            raise FileTextError([(f"line {node.start_mark.line + 1}: the file expands to more than {MAX_VALUES:,} "
                                 "values (YAML aliases); write it out")])
        return loader.construct_document(node), lines
    except yaml.YAMLError as e:
        problem = getattr(e, "problem", None) or getattr(e, "reason", None) or e
        raise FileTextError([f"line {_line_of(e, text)}: not valid YAML: {problem}"]) from None
    except RecursionError:
        raise FileTextError(["line 1: nested too deeply to be an inventory or a configuration"]) from None
    finally:
        if loader is not None:
            loader.dispose()
