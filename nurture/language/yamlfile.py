"""Reading YAML written by people, keeping line numbers for every key and item."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import MarkedYAMLError, YAMLError
from ruamel.yaml.nodes import MappingNode, Node, SequenceNode

from nurture.errors import InputFileError
from nurture.language.wording import yaml_problem


def load_yaml(path: Path) -> Any:
    """Parse *path*; raise :class:`InputFileError` as ``path:line: message``."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise InputFileError(f"{path}: not valid UTF-8 text: {exc.reason}") from None
    except OSError as exc:
        raise InputFileError(f"{path}: cannot read: {exc.strerror}") from None
    return parse_yaml(text, str(path))


#: Values a file may hold once its aliases are expanded (a "billion laughs" file of nine
#: levels of nine aliases would hold 387 million).
MAX_EXPANDED_VALUES = 100_000


def parse_yaml(text: str, name: str, first_line: int = 1) -> Any:
    """Parse YAML *text*; lines in errors count from *first_line*.

    A file whose aliases expand to more than :data:`MAX_EXPANDED_VALUES` values, or that
    nests too deeply to read, is refused with the line where it happens.
    """
    yaml = YAML(typ="rt")
    try:
        root = yaml.compose(text)
        if root is not None:
            _check_expansion(root, name, first_line)
        return yaml.load(text)
    except RecursionError:
        raise InputFileError(f"{name}: nested too deeply to read") from None
    except MarkedYAMLError as exc:
        raw = exc.problem or exc.context or "invalid YAML"
        problem = yaml_problem(raw, exc.context or "")
        mark = exc.problem_mark or exc.context_mark
        if "never closed" in problem and exc.context_mark is not None:
            mark = exc.context_mark  # where the quote opened, not where the file ends
        line = (mark.line + first_line) if mark is not None else first_line
        raise InputFileError(f"{name}:{line}: invalid YAML: {problem}") from None
    except YAMLError as exc:
        raise InputFileError(f"{name}: invalid YAML: {exc}") from None


def _check_expansion(root: Node, name: str, first_line: int) -> None:
    """Refuse a node graph whose aliases expand past :data:`MAX_EXPANDED_VALUES`."""
    sizes: dict[int, int] = {}
    stack: list[tuple[Node, bool]] = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        if id(node) in sizes:
            continue
        children: list[Node] = []
        if isinstance(node, SequenceNode):
            children = list(node.value)
        elif isinstance(node, MappingNode):
            children = [part for pair in node.value for part in pair]
        if not children_done:
            stack.append((node, True))
            stack.extend((child, False) for child in children if id(child) not in sizes)
            continue
        size = 1 + sum(sizes.get(id(child), 1) for child in children)
        if size > MAX_EXPANDED_VALUES:
            line = node.start_mark.line + first_line
            raise InputFileError(
                f"{name}:{line}: aliases here expand to over {MAX_EXPANDED_VALUES:,} values: "
                "refused (write the values out, or use fewer aliases)"
            )
        sizes[id(node)] = size


def key_line(node: Any, key: Any, default: int) -> int:
    """The 1-based line of *key* in the mapping *node*."""
    if isinstance(node, CommentedMap) and key in node:
        return int(node.lc.key(key)[0]) + 1
    return default


def value_line(node: Any, key: Any, default: int) -> int:
    """The 1-based line where the value of *key* in *node* starts."""
    if isinstance(node, CommentedMap) and key in node:
        return int(node.lc.value(key)[0]) + 1
    return default


def item_line(node: Any, index: int, default: int) -> int:
    """The 1-based line of item *index* of the sequence *node*."""
    if isinstance(node, CommentedSeq) and 0 <= index < len(node):
        return int(node.lc.item(index)[0]) + 1
    return default


def node_line(node: Any, default: int = 1) -> int:
    """The 1-based line where a mapping or sequence node starts."""
    if isinstance(node, CommentedMap | CommentedSeq):
        return int(node.lc.line) + 1
    return default
