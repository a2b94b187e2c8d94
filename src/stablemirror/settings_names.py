"""Which setting names exist: unknown YAML keys and `STABLEMIRROR_*` variables are mistakes.

pydantic-settings ignores an environment variable that matches no setting, and a nested
model ignores keys it does not know, so `STABLEMIRROR_AUTH_ENABLED=true` (one `_` short) or
`auth: {enabeld: true}` would start a server without auth and without a word. These walk
the schema instead and name what matches nothing.
"""

from __future__ import annotations

import difflib
import types
from collections.abc import Iterator, Mapping
from typing import Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel

ENV_PREFIX = "STABLEMIRROR_"
NESTED = "__"
# STABLEMIRROR_* variables that are read directly, not settings: credentials of the CLI's
# remote commands (cli/admin_client.py, cli/auth.py) and of signing keys (cli/trust.py).
NON_SETTING_ENV = frozenset({
    "STABLEMIRROR_PASSWORD", "STABLEMIRROR_USERNAME", "STABLEMIRROR_KEY_PASSWORD",
    "STABLEMIRROR_REGISTRY_USERNAME", "STABLEMIRROR_REGISTRY_PASSWORD",
})
# Reserved for the test suite's own knobs (tests/), which reach the server's environment.
TEST_ENV_PREFIX = "STABLEMIRROR_TEST_"

Shape = Literal["model", "list", "dict"]


def _shape(annotation: Any) -> tuple[Shape, type[BaseModel]] | None:
    """How a field holds sub-settings: one model, a list of them or a dict of them."""
    origin = get_origin(annotation)
    if origin in (Union, types.UnionType):
        for arg in get_args(annotation):
            found = _shape(arg)
            if found is not None:
                return found
        return None
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return "model", annotation
    args = get_args(annotation)
    if origin is list and args and isinstance(args[0], type) and issubclass(args[0], BaseModel):
        return "list", args[0]
    if origin is dict and len(args) == 2 and isinstance(args[1], type) \
            and issubclass(args[1], BaseModel):
        return "dict", args[1]
    return None


def _is_dict(annotation: Any) -> bool:
    if get_origin(annotation) in (Union, types.UnionType):
        return any(_is_dict(a) for a in get_args(annotation))
    return get_origin(annotation) is dict or annotation is dict


def unknown_keys(model: type[BaseModel], data: Mapping[str, Any], prefix: str = "") -> list[str]:
    """Dotted names of the keys in `data` (a parsed YAML document) no setting matches."""
    out: list[str] = []
    for key, value in data.items():
        field = model.model_fields.get(str(key))
        if field is None:
            out.append(f"{prefix}{key}")
            continue
        shape = _shape(field.annotation)
        if shape is None:
            continue
        kind, sub = shape
        if kind == "model" and isinstance(value, Mapping):
            out += unknown_keys(sub, value, f"{prefix}{key}.")
        elif kind == "list" and isinstance(value, list):
            for i, item in enumerate(value):
                if isinstance(item, Mapping):
                    out += unknown_keys(sub, item, f"{prefix}{key}[{i}].")
        elif kind == "dict" and isinstance(value, Mapping):
            for name, item in value.items():
                if isinstance(item, Mapping):
                    out += unknown_keys(sub, item, f"{prefix}{key}.{name}.")
    return out


def _env_name_known(model: type[BaseModel], parts: list[str]) -> bool:
    fields = {name.lower(): f for name, f in model.model_fields.items()}
    field = fields.get(parts[0])
    if field is None:
        return False
    if len(parts) == 1:
        return True
    shape = _shape(field.annotation)
    if shape is not None and shape[0] == "model":
        return _env_name_known(shape[1], parts[1:])
    # Below a dict the names are keys (upstream groups, claims): data, not settings.
    return (shape is not None and shape[0] == "dict") or _is_dict(field.annotation)


def _env_names(model: type[BaseModel], prefix: str) -> Iterator[str]:
    for name, field in model.model_fields.items():
        shape = _shape(field.annotation)
        if shape is not None and shape[0] == "model":
            yield from _env_names(shape[1], f"{prefix}{name.upper()}{NESTED}")
        else:
            yield f"{prefix}{name.upper()}"


def unknown_env_names(model: type[BaseModel],
                      environ: Mapping[str, str]) -> list[tuple[str, str | None]]:
    """(name, closest known name or None) for each STABLEMIRROR_* variable that is no
    setting of `model` and none of the variables read directly."""
    known = sorted(_env_names(model, ENV_PREFIX)) + sorted(NON_SETTING_ENV)
    out: list[tuple[str, str | None]] = []
    for name in sorted(environ):
        upper = name.upper()
        if (not upper.startswith(ENV_PREFIX) or upper in NON_SETTING_ENV
                or upper.startswith(TEST_ENV_PREFIX)):
            continue
        parts = upper[len(ENV_PREFIX):].lower().split(NESTED)
        if not _env_name_known(model, parts):
            # Compared without the prefix every name shares, which would make all look alike.
            close = difflib.get_close_matches(upper[len(ENV_PREFIX):],
                                              [k[len(ENV_PREFIX):] for k in known], n=1,
                                              cutoff=0.75)
            out.append((name, ENV_PREFIX + close[0] if close else None))
    return out
