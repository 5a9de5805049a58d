"""Deterministic example values for JSON schemas.

`sample_from_schema` turns a JSON schema (hand-written, or from pydantic's
`model_json_schema()`) into a JSON-compatible value that satisfies it. The
simulated chat model uses it to fill tool-call arguments and structured output.
"""

from __future__ import annotations

import copy
import hashlib
import math
import random
import uuid
from collections.abc import Mapping
from typing import Any

__all__ = ["sample_from_schema"]

#: How many times one `$ref` may be expanded on a single path before the sampler
#: switches to "minimal" values (no optional properties, empty arrays, null options).
_RECURSION_LIMIT = 2
#: Hard stop: beyond this many nested `$ref` expansions the sampler returns None.
_MAX_REF_DEPTH = 32
_DEFAULT_ITEMS = 2

_FORMATS: dict[str, str] = {
    "date-time": "2024-01-01T12:00:00Z",
    "date": "2024-01-01",
    "time": "12:00:00",
    "duration": "PT1M",
    "email": "simulated@example.com",
    "idn-email": "simulated@example.com",
    "hostname": "simulated.example.com",
    "idn-hostname": "simulated.example.com",
    "ipv4": "192.0.2.1",
    "ipv6": "2001:db8::1",
    "byte": "c2ltdWxhdGVk",
    "base64": "c2ltdWxhdGVk",
    "password": "simulated-password",
}
_URI_FORMATS = frozenset({"uri", "url", "iri", "uri-reference", "iri-reference", "uri-template"})
_TYPE_ORDER = ("object", "array", "string", "integer", "number", "boolean")


def sample_from_schema(
    schema: Mapping[str, Any] | bool, *, seed: int = 0, name: str = "value"
) -> Any:
    """Return a deterministic JSON value that satisfies `schema`.

    Strings read "simulated <name>" (the property name), numbers, booleans and
    enum choices are drawn from `seed`, arrays get 2 items unless bounded, and all
    properties (required and optional) are filled. `default` is ignored.
    """
    root: Mapping[str, Any] = schema if isinstance(schema, Mapping) else {}
    return _Sampler(root, seed).sample(schema, name, name, (), False)


class _Sampler:
    """Walks one root schema; holds the root for `$ref` resolution."""

    def __init__(self, root: Mapping[str, Any], seed: int) -> None:
        self.root = root
        self.seed = seed

    # -- helpers -------------------------------------------------------------

    def rng(self, path: str) -> random.Random:
        """A random generator that depends only on the seed and the value's path."""
        data = f"{self.seed}\x1f{path}".encode("utf-8", "surrogatepass")
        return random.Random(int.from_bytes(hashlib.sha256(data).digest()[:8], "big"))

    def resolve(self, ref: str) -> Mapping[str, Any] | None:
        """Resolve a local JSON pointer such as `#/$defs/Item`; None if it cannot."""
        if not ref.startswith("#"):
            return None
        node: Any = self.root
        for raw in ref[1:].split("/"):
            if not raw:
                continue
            part = raw.replace("~1", "/").replace("~0", "~")
            if isinstance(node, Mapping) and part in node:
                node = node[part]
            elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
                node = node[int(part)]
            else:
                return None
        return node if isinstance(node, Mapping) else None

    def expand(
        self, schema: Mapping[str, Any], refs: tuple[str, ...]
    ) -> tuple[dict[str, Any], tuple[str, ...]]:
        """Inline `$ref` and `allOf` at the top of `schema`; return it and the refs used."""
        out = dict(schema)
        for _ in range(_MAX_REF_DEPTH):
            ref = out.pop("$ref", None)
            if not isinstance(ref, str):
                break
            refs = (*refs, ref)
            target = self.resolve(ref)
            if target is not None:
                out = {**target, **out}
            if len(refs) > _MAX_REF_DEPTH:
                break
        parts = out.pop("allOf", None)
        if isinstance(parts, list):
            merged: dict[str, Any] = {}
            for part in parts:
                if isinstance(part, Mapping):
                    flat, refs = self.expand(part, refs)
                    _merge_into(merged, flat)
            _merge_into(merged, out)
            out = merged
        return out, refs

    # -- the walk ------------------------------------------------------------

    def sample(
        self,
        schema: Mapping[str, Any] | bool,
        name: str,
        path: str,
        refs: tuple[str, ...],
        minimal: bool,
    ) -> Any:
        """Sample one value; `minimal` asks for the smallest valid value (recursion guard)."""
        if schema is False:
            return None
        if not isinstance(schema, Mapping):
            return f"simulated {name}"
        node, refs = self.expand(schema, refs)
        if len(refs) > _MAX_REF_DEPTH:
            return None
        if refs and refs.count(refs[-1]) > _RECURSION_LIMIT:
            minimal = True
        if refs and refs.count(refs[-1]) > _RECURSION_LIMIT + 3:
            return None

        if "const" in node:
            return copy.deepcopy(node["const"])
        enum = node.get("enum")
        if isinstance(enum, list) and enum:
            if minimal:
                return copy.deepcopy(enum[0])
            return copy.deepcopy(enum[self.rng(path).randrange(len(enum))])
        for key in ("anyOf", "oneOf"):
            options = node.get(key)
            if isinstance(options, list) and options:
                return self._sample_union(node, key, options, name, path, refs, minimal)

        kind = _pick_type(node, minimal)
        if kind == "null":
            return None
        if kind == "object":
            return self._object(node, name, path, refs, minimal)
        if kind == "array":
            return self._array(node, name, path, refs, minimal)
        if kind == "integer":
            return self._integer(node, path)
        if kind == "number":
            return self._number(node, path)
        if kind == "boolean":
            return False if minimal else self.rng(path).random() < 0.5
        return self._string(node, name, path)

    def _sample_union(
        self,
        node: Mapping[str, Any],
        key: str,
        options: list[Any],
        name: str,
        path: str,
        refs: tuple[str, ...],
        minimal: bool,
    ) -> Any:
        siblings = {k: v for k, v in node.items() if k not in (key, "title", "description")}
        expanded = []
        for option in options:
            if isinstance(option, Mapping):
                flat, _ = self.expand(option, refs)
                expanded.append((option, flat))
        non_null = [(raw, flat) for raw, flat in expanded if not _is_null(flat)]
        if not non_null or (minimal and len(non_null) < len(expanded)):
            return None
        raw, _ = non_null[0]
        chosen = {**siblings, **raw} if siblings else raw
        return self.sample(chosen, name, path, refs, minimal)

    def _object(
        self,
        node: Mapping[str, Any],
        name: str,
        path: str,
        refs: tuple[str, ...],
        minimal: bool,
    ) -> dict[str, Any]:
        props = node.get("properties")
        props = props if isinstance(props, Mapping) else {}
        required = node.get("required")
        required_keys = set(required) if isinstance(required, list) else set()
        out: dict[str, Any] = {}
        for key, sub in props.items():
            if minimal and key not in required_keys:
                continue
            out[key] = self.sample(sub, str(key), f"{path}.{key}", refs, minimal)
        extra = node.get("additionalProperties")
        if not props and isinstance(extra, Mapping):
            wanted = node.get("minProperties")
            count = wanted if isinstance(wanted, int) and wanted > 0 else (0 if minimal else 1)
            for i in range(count):
                key = f"key_{i + 1}"
                out[key] = self.sample(extra, key, f"{path}.{key}", refs, minimal)
        return out

    def _array(
        self,
        node: Mapping[str, Any],
        name: str,
        path: str,
        refs: tuple[str, ...],
        minimal: bool,
    ) -> list[Any]:
        prefix = node.get("prefixItems")
        items = node.get("items")
        if isinstance(items, list):  # draft-4 tuple form
            prefix, items = items, node.get("additionalItems")
        prefix = prefix if isinstance(prefix, list) else []
        low = node.get("minItems")
        high = node.get("maxItems")
        low = low if isinstance(low, int) and low > 0 else 0
        count = max(len(prefix), low if minimal else max(low, _DEFAULT_ITEMS))
        if isinstance(high, int):
            count = min(count, max(high, 0))
        if items is False or (items is None and prefix):
            count = min(count, len(prefix))
        out: list[Any] = []
        for i in range(count):
            sub: Any = prefix[i] if i < len(prefix) else items
            if sub is None:
                sub = {}
            out.append(self.sample(sub, f"{name} {i + 1}", f"{path}[{i}]", refs, minimal))
        return out

    def _integer(self, node: Mapping[str, Any], path: str) -> int:
        low, high = _bounds(node)
        lo: int | None = None
        hi: int | None = None
        if low is not None:  # smallest integer above (or at) the bound
            lo = math.floor(low[0]) + 1 if low[1] else math.ceil(low[0])
        if high is not None:  # largest integer below (or at) the bound
            hi = math.ceil(high[0]) - 1 if high[1] else math.floor(high[0])
        if lo is None:
            lo = 1 if hi is None else min(hi, 1)
        if hi is None:
            hi = lo + 99
        if lo > hi:
            return lo
        step = node.get("multipleOf")
        rng = self.rng(path)
        if isinstance(step, int) and not isinstance(step, bool) and step > 0:
            first, last = -(-lo // step), hi // step
            if first <= last:
                return rng.randint(first, last) * step
        return rng.randint(lo, hi)

    def _number(self, node: Mapping[str, Any], path: str) -> float:
        low, high = _bounds(node)
        lo = 0.0 if low is None else float(low[0])
        hi = (lo + 100.0) if high is None else float(high[0])
        if low is None and high is not None:
            lo = min(hi - 100.0, 0.0)
        if lo > hi:
            return lo
        rng = self.rng(path)
        step = node.get("multipleOf")
        if isinstance(step, int | float) and not isinstance(step, bool) and step > 0:
            first, last = math.ceil(lo / step), math.floor(hi / step)
            candidates = [
                k * step
                for k in range(first, min(last, first + 50) + 1)
                if _inside(k * step, low, high)
            ]
            if candidates:
                return float(rng.choice(candidates))
        value = round(rng.uniform(lo, hi), 2)
        if not _inside(value, low, high):
            value = (lo + hi) / 2
        return float(value)

    def _string(self, node: Mapping[str, Any], name: str, path: str) -> str:
        fmt = node.get("format")
        if fmt == "uuid":
            text = str(uuid.UUID(int=self.rng(path).getrandbits(128), version=4))
        elif fmt in _URI_FORMATS:
            text = f"https://example.com/simulated/{_slug(name)}"
        elif isinstance(fmt, str) and fmt in _FORMATS:
            text = _FORMATS[fmt]
        else:
            text = f"simulated {name}"
        low = node.get("minLength")
        high = node.get("maxLength")
        if isinstance(low, int) and len(text) < low:
            text = text.ljust(low, "x")
        if isinstance(high, int) and len(text) > high:
            text = text[: max(high, 0)]
        return text


def _merge_into(target: dict[str, Any], source: Mapping[str, Any]) -> None:
    """Merge one `allOf` member into `target` (properties and required are unioned)."""
    for key, value in source.items():
        if key == "properties" and isinstance(value, Mapping):
            target["properties"] = {**target.get("properties", {}), **value}
        elif key == "required" and isinstance(value, list):
            known = list(target.get("required", []))
            target["required"] = known + [k for k in value if k not in known]
        else:
            target[key] = value


def _is_null(schema: Mapping[str, Any]) -> bool:
    kind = schema.get("type")
    return kind == "null" or (isinstance(kind, list) and kind == ["null"])


def _pick_type(node: Mapping[str, Any], minimal: bool) -> str:
    kind = node.get("type")
    if isinstance(kind, list):
        if minimal and "null" in kind:
            return "null"
        named = [k for k in kind if isinstance(k, str) and k != "null"]
        if named:
            return named[0]
        return "null" if "null" in kind else "string"
    if isinstance(kind, str):
        return kind
    if any(k in node for k in ("properties", "additionalProperties", "required")):
        return "object"
    if any(k in node for k in ("items", "prefixItems", "minItems", "maxItems")):
        return "array"
    if any(k in node for k in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum")):
        return "number"
    return "string"


def _bounds(
    node: Mapping[str, Any],
) -> tuple[tuple[float, bool] | None, tuple[float, bool] | None]:
    """Return ((low, exclusive), (high, exclusive)), each None when unbounded."""

    def number(value: Any) -> float | None:
        if isinstance(value, bool) or not isinstance(value, int | float):
            return None
        return float(value) if math.isfinite(value) else None

    low: tuple[float, bool] | None = None
    high: tuple[float, bool] | None = None
    minimum, maximum = number(node.get("minimum")), number(node.get("maximum"))
    ex_min, ex_max = node.get("exclusiveMinimum"), node.get("exclusiveMaximum")
    if minimum is not None:
        low = (minimum, ex_min is True)  # draft-4 boolean form
    if maximum is not None:
        high = (maximum, ex_max is True)
    if (value := number(ex_min)) is not None and (low is None or value >= low[0]):
        low = (value, True)
    if (value := number(ex_max)) is not None and (high is None or value <= high[0]):
        high = (value, True)
    return low, high


def _inside(value: float, low: tuple[float, bool] | None, high: tuple[float, bool] | None) -> bool:
    if low is not None and (value < low[0] or (low[1] and value == low[0])):
        return False
    return not (high is not None and (value > high[0] or (high[1] and value == high[0])))


def _slug(name: str) -> str:
    slug = "".join(c if c.isascii() and c.isalnum() else "-" for c in name.lower()).strip("-")
    return slug or "value"
