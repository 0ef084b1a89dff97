"""The configuration reference, generated from the config models: one source for every key.

The JSON Schema (``sidegate config schema``, shipped as ``sidegate/sidegate.schema.json``) and
the key tables of ``docs/configuration.md`` (``scripts/gen_config_reference.py``) both come from
here, so neither can drift from what the loader accepts. A key's meaning is its field's
``description`` when it has one, else the comment written right above the field in its settings
class (where the project has always explained its keys), else its inline comment.
"""

from __future__ import annotations

import enum
import inspect
import json
import re
import types
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import annotated_types
from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from sidegate.settings import SidegateConfig

SCHEMA_ID = "https://sidegate.invalid/schema/sidegate.schema.json"
GENERATED_BEGIN = "<!-- BEGIN GENERATED: scripts/gen_config_reference.py; do not edit by hand -->"
GENERATED_END = "<!-- END GENERATED -->"


@dataclass(frozen=True)
class Key:
    path: str  # "authz.policy.body.max_bytes"; list items as "sources[]"
    type: str
    default: str
    meaning: str
    required: bool


@dataclass(frozen=True)
class Section:
    path: str
    title: str
    doc: str
    keys: tuple[Key, ...]


# -- meanings from the settings classes' own comments -------------------------------------

_FIELD_LINE = re.compile(r"^(?P<indent>\s+)(?P<name>[A-Za-z_]\w*)\s*:\s*[^=]")


@cache
def _comments(cls: type) -> dict[str, str]:
    """Field name -> the comment block above it (or its inline comment), from the class source."""
    try:
        lines, _ = inspect.getsourcelines(cls)
    except (OSError, TypeError):
        return {}
    found: dict[str, str] = {}
    block: list[str] = []
    body_indent: str | None = None
    for line in lines[1:]:
        stripped = line.strip()
        if stripped.startswith("#"):
            block.append(stripped.lstrip("#").strip())
            continue
        match = _FIELD_LINE.match(line)
        if match and (body_indent is None or match["indent"] == body_indent):
            body_indent = match["indent"]
            inline = line.split("  # ", 1)[1].strip() if "  # " in line else ""
            text = " ".join(block) or inline
            if text and not text.startswith("type: ignore"):
                found.setdefault(match["name"], text)
        block = []
    return found


def _meaning(cls: type[BaseModel], name: str, field: FieldInfo) -> str:
    if field.description:
        return " ".join(field.description.split())
    for klass in cls.__mro__:
        if isinstance(klass, type) and issubclass(klass, BaseModel) and name in _comments(klass):
            return _comments(klass)[name]
    return ""


def _doc(cls: type[BaseModel]) -> str:
    doc = cls.__doc__ or ""
    if not doc or doc == BaseModel.__doc__:
        return ""
    return " ".join(inspect.cleandoc(doc).split())


# -- types and defaults, in words ---------------------------------------------------------


def _unwrap(annotation: Any) -> Any:
    while get_origin(annotation) is Annotated:
        annotation = get_args(annotation)[0]
    return annotation


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    annotation = _unwrap(annotation)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    found: list[type[BaseModel]] = []
    for arg in get_args(annotation):
        found.extend(_models_in(arg))
    return found


def _type_words(annotation: Any) -> str:
    annotation = _unwrap(annotation)
    origin = get_origin(annotation)
    variants = [m for m in map(_variant_tag, _models_in(annotation)) if m]
    if origin in (Union, types.UnionType) and len(variants) > 1:
        return "section, by `type`: " + ", ".join(f"`{v}`" for v in variants)
    if origin is Literal:
        return "one of " + ", ".join(f"`{v}`" for v in get_args(annotation))
    if origin in (Union, types.UnionType):
        args = [a for a in get_args(annotation) if a is not type(None)]
        words = " or ".join(_type_words(a) for a in args)
        return f"{words} or null" if len(args) < len(get_args(annotation)) else words
    if origin in (list, tuple, set, frozenset):
        args = get_args(annotation)
        return f"list of {_type_words(args[0])}" if args else "list"
    if origin is dict:
        key, value = get_args(annotation) or (str, Any)
        return f"map of {_type_words(key)} to {_type_words(value)}"
    if isinstance(annotation, type):
        if issubclass(annotation, BaseModel):
            return "section"
        if issubclass(annotation, enum.Enum):
            return "one of " + ", ".join(f"`{m.value}`" for m in annotation)
        if issubclass(annotation, bool):
            return "boolean"
        if issubclass(annotation, int):
            return "integer"
        if issubclass(annotation, float):
            return "number"
        if issubclass(annotation, str):
            return "string"
        if issubclass(annotation, Path):
            return "path"
    return "any"


_BOUNDS = (
    (annotated_types.Ge, "≥", "ge"),
    (annotated_types.Gt, ">", "gt"),
    (annotated_types.Le, "≤", "le"),
    (annotated_types.Lt, "<", "lt"),
)


def _constraints(field: FieldInfo) -> str:
    words = []
    for item in field.metadata:
        for kind, sign, attr in _BOUNDS:
            if isinstance(item, kind):
                words.append(f"{sign} {getattr(item, attr)}")
        if isinstance(item, annotated_types.MinLen) and item.min_length:
            words.append(f"at least {item.min_length} long")
        pattern = getattr(item, "pattern", None)
        if isinstance(pattern, str):
            words.append(f"matching `{pattern}`")
    return ", ".join(words)


def _default_value(field: FieldInfo) -> Any:
    if field.default is not PydanticUndefined:
        return field.default
    if field.default_factory is not None:
        try:
            return field.default_factory()  # type: ignore[call-arg]
        except TypeError:
            return PydanticUndefined
    return PydanticUndefined


def _jsonable(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, Path | enum.Enum):
        return str(value.value if isinstance(value, enum.Enum) else value)
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_jsonable(v) for v in value]
    return value


def _default_words(field: FieldInfo, is_section: bool) -> str:
    if field.is_required():
        return "required"
    if is_section:
        return "(section)"
    value = _default_value(field)
    if value is PydanticUndefined:
        return ""
    if value is None:
        return "none"
    return f"`{json.dumps(_jsonable(value), ensure_ascii=False)}`"


# -- the walk -----------------------------------------------------------------------------


def _section_meaning(models: list[type[BaseModel]], title: str) -> str:
    """A section's key without a comment of its own: its model's docstring, or a pointer."""
    if not models:
        return ""
    if len(models) == 1 and _doc(models[0]):
        return _doc(models[0])
    return f"see {title} below"


def _variant_tag(model: type[BaseModel]) -> str | None:
    """``type: Literal["jwt"]`` names one variant of a discriminated list (identity sources)."""
    field = model.model_fields.get("type")
    if field is None:
        return None
    args = get_args(_unwrap(field.annotation))
    return str(args[0]) if get_origin(_unwrap(field.annotation)) is Literal and args else None


def sections(root: type[BaseModel] = SidegateConfig) -> list[Section]:
    """Every section of the config, depth first, each with its own keys."""
    out: list[Section] = []
    _walk(root, "", "sidegate.yaml", out)
    return out


def _walk(model: type[BaseModel], path: str, title: str, out: list[Section]) -> None:
    keys: list[Key] = []
    children: list[tuple[type[BaseModel], str, str]] = []
    for name, field in model.model_fields.items():
        key_path = f"{path}.{name}" if path else name
        models = _models_in(field.annotation)
        unwrapped = _unwrap(field.annotation)
        origin = get_origin(unwrapped)
        is_section = isinstance(unwrapped, type) and issubclass(unwrapped, BaseModel)
        item_path = f"{key_path}[]" if origin in (list, tuple) else key_path
        if origin is dict:
            item_path = f"{key_path}.<name>"
        item_title = f"`{item_path}`"
        type_words = _type_words(field.annotation)
        constraints = _constraints(field)
        if constraints:
            type_words = f"{type_words} ({constraints})"
        keys.append(
            Key(
                path=key_path,
                type=type_words,
                default=_default_words(field, is_section),
                meaning=_meaning(model, name, field) or _section_meaning(models, item_title),
                required=field.is_required(),
            )
        )
        for child in models:
            tag = _variant_tag(child) if len(models) > 1 else None
            child_title = f"`{item_path}`" + (f" with `type: {tag}`" if tag else "")
            children.append((child, item_path, child_title))
    out.append(Section(path=path, title=title, doc=_doc(model), keys=tuple(keys)))
    for child, child_path, child_title in children:
        _walk(child, child_path, child_title, out)


def all_keys() -> Iterator[Key]:
    for section in sections():
        yield from section.keys


# -- JSON Schema --------------------------------------------------------------------------


def _models_by_name(root: type[BaseModel]) -> dict[str, type[BaseModel]]:
    found: dict[str, type[BaseModel]] = {}
    pending = [root]
    while pending:
        model = pending.pop()
        if model.__name__ in found:
            continue
        found[model.__name__] = model
        for field in model.model_fields.values():
            pending.extend(_models_in(field.annotation))
    return found


def _describe(schema: dict[str, Any], model: type[BaseModel]) -> None:
    doc = _doc(model)
    if doc:
        schema["description"] = doc
    schema.pop("title", None)
    properties = schema.get("properties", {})
    for name, field in model.model_fields.items():
        prop = properties.get(name)
        if prop is None:
            continue
        prop.pop("title", None)
        meaning = _meaning(model, name, field)
        if meaning:
            prop["description"] = meaning
        if "default" not in prop and not field.is_required() and not _models_in(field.annotation):
            value = _default_value(field)
            if value is not PydanticUndefined:
                prop["default"] = _jsonable(value)


def json_schema(root: type[BaseModel] = SidegateConfig) -> dict[str, Any]:
    """The JSON Schema of ``sidegate.yaml`` with a description and default for every key."""
    schema = root.model_json_schema(mode="validation")
    models = _models_by_name(root)
    for name, definition in schema.get("$defs", {}).items():
        if name in models:
            _describe(definition, models[name])
    _describe(schema, root)
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": SCHEMA_ID,
        "title": "sidegate.yaml",
        **schema,
    }


def schema_text() -> str:
    return json.dumps(json_schema(), indent=2, ensure_ascii=False, sort_keys=True) + "\n"


# -- Markdown -----------------------------------------------------------------------------


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def markdown() -> str:
    """The key tables of docs/configuration.md, between the GENERATED markers."""
    lines = [GENERATED_BEGIN, ""]
    for section in sections():
        depth = 4 if "." in section.path else 3
        lines.append(f"{'#' * depth} {section.title}")
        lines.append("")
        if section.doc:
            lines.extend([section.doc, ""])
        lines.append("| key | type | default | meaning |")
        lines.append("|---|---|---|---|")
        for key in section.keys:
            lines.append(
                f"| `{key.path}` | {_cell(key.type)} | {_cell(key.default)} | "
                f"{_cell(key.meaning)} |"
            )
        lines.append("")
    lines.append(GENERATED_END)
    return "\n".join(lines) + "\n"


def splice(document: str, generated: str) -> str:
    """``document`` with the text between the GENERATED markers replaced by ``generated``."""
    start = document.find(GENERATED_BEGIN)
    end = document.find(GENERATED_END)
    if start < 0 or end < start:
        raise ValueError("the document has no GENERATED markers")
    return document[:start] + generated + document[end + len(GENERATED_END) + 1 :]
