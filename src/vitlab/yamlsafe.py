"""YAML read safely: a bounded SafeLoader (no alias bombs, no deep nesting), one-line parse errors,
and `read_yaml` for config and spec files (size-capped, a mapping at the top or a UserError)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from .errors import UserError, one_line

#: The most a YAML document may hold once its aliases are expanded: nodes plus characters of scalars.
#: A config or spec is a few kB; a "billion laughs" alias bomb is refused before anything walks it.
MAX_YAML_SIZE = 1_000_000
#: The largest YAML file read (configs and specs are a few kB).
MAX_YAML_BYTES = 10_000_000
#: The deepest nesting of mappings and lists a YAML document may have (configs nest 2-4 levels).
MAX_YAML_DEPTH = 64


class BoundedSafeLoader(yaml.SafeLoader):
    """yaml.SafeLoader that refuses documents whose aliases expand past MAX_YAML_SIZE, that nest
    deeper than MAX_YAML_DEPTH, or whose aliases refer to themselves. Every YAML read goes through it."""

    def compose_document(self):
        node = super().compose_document()
        check_yaml_size(node)
        return node


def check_yaml_size(root: yaml.Node) -> int:
    """The size of the YAML node graph `root` expanded to a tree (aliases share nodes, so a few
    lines can stand for 10⁹ values). Iterative, memoized by node: linear in the file, not the tree.
    Raises yaml.composer.ComposerError when a limit is passed."""
    def refuse(node, problem):
        raise yaml.composer.ComposerError(None, None, problem, node.start_mark)

    def children(node):
        if isinstance(node, yaml.SequenceNode):
            return node.value
        if isinstance(node, yaml.MappingNode):
            return [n for pair in node.value for n in pair]
        return ()

    sizes: dict[int, int] = {}
    active: set[int] = set()  # nodes whose subtree is being walked: meeting one again is a cycle
    stack = [(root, 1, False)]
    while stack:
        node, depth, walked = stack.pop()
        key = id(node)
        if walked:
            active.discard(key)
            own = len(node.value) if isinstance(node, yaml.ScalarNode) else 0
            sizes[key] = 1 + own + sum(sizes[id(c)] for c in children(node))
            if sizes[key] > MAX_YAML_SIZE:
                refuse(node, f"aliases expand this document past {MAX_YAML_SIZE:,} values and characters")
            continue
        if key in sizes:
            continue
        if key in active:
            refuse(node, "an alias refers to the collection that contains it")
        if depth > MAX_YAML_DEPTH:
            refuse(node, f"nested deeper than {MAX_YAML_DEPTH} levels")
        active.add(key)
        stack.append((node, depth, True))
        stack.extend((c, depth + 1, False) for c in children(node) if id(c) not in sizes)
    return sizes[id(root)]


def yaml_load(text: str, loader: type = BoundedSafeLoader) -> Any:
    """Parse YAML text with the bounded safe loader (raises yaml.YAMLError, also for a nesting so
    deep that PyYAML's recursive composer would overflow the stack)."""
    try:
        return yaml.load(text, Loader=loader)  # noqa: S506 - a SafeLoader subclass
    except RecursionError:
        raise yaml.YAMLError(f"nested deeper than {MAX_YAML_DEPTH} levels") from None


def yaml_problem(e: yaml.YAMLError, text: str = "") -> str:
    """One line saying where and why YAML `text` failed to parse."""
    if isinstance(e, yaml.reader.ReaderError):  # e.g. a NUL byte: PyYAML's own message is two lines
        code = e.character if isinstance(e.character, int) else ord(str(e.character)[:1] or "\0")
        line = text.count("\n", 0, e.position) + 1
        return f"line {line}: character U+{code:04X} is not allowed in YAML (a binary file?)"
    mark = getattr(e, "problem_mark", None)
    where = f"line {mark.line + 1}: " if mark is not None else ""
    return one_line(where + str(getattr(e, "problem", None) or e))


def read_yaml(path: str | Path) -> dict:
    p = Path(path)
    if not p.is_file():
        raise UserError(f"{p}: no such file")
    text = ""
    try:
        if p.stat().st_size > MAX_YAML_BYTES:
            raise UserError(f"{p}: larger than {MAX_YAML_BYTES:,} bytes; not a config")
        text = p.read_text(encoding="utf-8")
        data = yaml_load(text)
    except yaml.YAMLError as e:
        raise UserError(f"{p}: invalid YAML ({yaml_problem(e, text)})") from None
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"{p}: cannot read ({one_line(e)})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UserError(f"{p}: top level must be a mapping of config keys")
    return data

