"""What both backends can hold: the checks every write passes before it reaches a store.

MongoDB (or PyMongo) refuses values the SQLite store would keep, so the same request would
succeed on one backend and fail with a driver error on the other. ``Collection`` (store.py)
runs these checks at the top of every insert, update, filter and projection, so both
backends refuse the same input with the same error before either sees it:

- integers outside signed 64 bits (BSON has no wider integer; SQLite's INTEGER neither);
- floats that are not finite (NaN, +-Infinity): JSON, and so the SQLite store, has none;
- strings (values or keys) holding lone surrogates: neither backend can encode them as UTF-8;
- object keys that are not strings, hold a NUL byte (BSON keys are C strings), or start with
  ``$`` (MongoDB 5.0+ stores such a key on insert but refuses it in some updates and reads it
  as an operator in filters, as this store's filter language does);
- nesting deeper than ``MAX_DEPTH`` levels, the document itself being level 1: MongoDB
  refuses documents nested deeper than 100 levels; 90 keeps a margin for how servers count
  and is far above what the REST layer accepts (64) plus the repositories' own wrapping;
- documents whose BSON encoding, with the ``_id`` MongoDB adds, exceeds 16 MiB
  (``TooLarge``); for an update only the update itself can be measured here, and MongoDB's
  refusal of a document an update grows past 16 MiB is mapped to ``TooLarge`` by mongo.py.

Keys containing ``.`` are allowed: MongoDB 5.0+ stores them on insert and ``$set``, SQLite
stores any key, and dataset configs name steering parameters like ``geometry.file``. Such a
key cannot be addressed by a dotted path (in a filter, an update or ``keys=``), which reads
every dot as a level; nothing in iceprod addresses a user-chosen key by path.

Errors are ``Invalid`` naming the field by its dotted path in the stored document, with
unprintable characters escaped: ``stats.a\\u0000b: a key must not contain a NUL byte``.

Cost: a document is screened by the JSON encoding the SQLite store needs anyway plus PyMongo's
C BSON encoder, and walked in Python only when the screen finds something (see
``check_document``); updates and filters, which are small, are walked. bench/scheduler.py
measures the insert rate with the checks.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import bson

from iceprod.common.errors import Invalid, TooLarge

MAX_DEPTH = 90
MAX_DOCUMENT_BYTES = 16 * 1024 * 1024
INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1
_INT32_MIN = -(2**31)
_INT32_MAX = 2**31 - 1
_ID_BYTES = 17  # the ObjectId ``_id`` MongoDB adds: type byte, "_id\0", 12 bytes
_SHOWN_KEY_CHARS = 64


class _Refused(Exception):
    """Raised deep in a document; each level adds its key on the way out."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
        self.path: list[Any] = []


def _escape(char: str) -> str:
    code = ord(char)
    if code < 0x10000:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def render_key(key: Any) -> str:
    """A key as it may be shown in an error: unprintable characters escaped, long keys cut."""
    text = key if isinstance(key, str) else repr(key)
    shown = "".join(c if c.isprintable() else _escape(c) for c in text[:_SHOWN_KEY_CHARS])
    return shown + ("..." if len(text) > _SHOWN_KEY_CHARS else "")


def _invalid(refused: _Refused, prefix: Sequence[Any] = ()) -> Invalid:
    path = ".".join(render_key(p) for p in (*prefix, *reversed(refused.path))) or "document"
    return Invalid(f"{path}: {refused.reason}", field=path)


def _utf8_size(text: str) -> int:
    try:
        return len(text.encode())
    except UnicodeEncodeError:
        raise _Refused("a string must not hold a lone surrogate") from None


def _key_size(key: Any) -> int:
    """The BSON size of an element's type byte and key; refuses keys MongoDB cannot hold."""
    if type(key) is not str and not isinstance(key, str):
        raise _Refused("a key must be a string")
    if key.isascii():
        size = len(key)
    else:
        size = _utf8_size(key)
    if "\x00" in key:
        raise _Refused("a key must not contain a NUL byte")
    if key[:1] == "$":
        raise _Refused("a key must not start with '$'")
    return size + 2


def _index_keys_size(n: int) -> int:
    """The BSON size of the type bytes and keys "0", "1", ... of an array of ``n`` items."""
    size, width, start, bound = 2 * n, 1, 0, 10
    while start < n:
        size += (min(n, bound) - start) * width
        start, bound, width = bound, bound * 10, width + 1
    return size


def _size(value: Any, depth: int) -> int:
    """The BSON size of a value held at nesting level ``depth``, checking it on the way."""
    kind = type(value)
    if kind is str:
        return (len(value) if value.isascii() else _utf8_size(value)) + 5
    if kind is dict:
        return _doc_size(value, depth + 1)
    if kind is list:
        return _list_size(value, depth + 1)
    if kind is int:
        if _INT32_MIN <= value <= _INT32_MAX:
            return 4
        if INT64_MIN <= value <= INT64_MAX:
            return 8
        raise _Refused("integer outside the signed 64-bit range")
    if kind is float:
        if value - value != 0.0:
            raise _Refused("a number must be finite (no NaN or Infinity)")
        return 8
    if kind is bool:
        return 1
    if value is None:
        return 0
    return _other_size(value, depth)


def _other_size(value: Any, depth: int) -> int:
    """Subclasses (StrEnum, IntEnum, OrderedDict, tuple) and unsupported types."""
    if isinstance(value, bool):
        return 1
    if isinstance(value, str):
        return _size(str(value), depth)
    if isinstance(value, int):
        return _size(int(value), depth)
    if isinstance(value, float):
        return _size(float(value), depth)
    if isinstance(value, Mapping):
        return _doc_size(value, depth + 1)
    if isinstance(value, list | tuple):
        return _list_size(value, depth + 1)
    raise _Refused(f"unsupported value of type {type(value).__name__}")


def _doc_size(doc: Mapping[Any, Any], depth: int) -> int:
    if depth > MAX_DEPTH:
        raise _Refused(f"nested deeper than {MAX_DEPTH} levels")
    size = 5
    key: Any = None
    try:
        for key, value in doc.items():
            size += _key_size(key) + _size(value, depth)
    except _Refused as refused:
        refused.path.append(key)
        raise
    return size


def _list_size(items: Sequence[Any], depth: int) -> int:
    if depth > MAX_DEPTH:
        raise _Refused(f"nested deeper than {MAX_DEPTH} levels")
    size = 5 + _index_keys_size(len(items))
    i = 0
    try:
        for i, value in enumerate(items):
            size += _size(value, depth)
    except _Refused as refused:
        refused.path.append(i)
        raise
    return size


def _too_large(size: int) -> TooLarge:
    return TooLarge(
        f"document: {size} bytes is more than a stored document may hold "
        f"({MAX_DOCUMENT_BYTES} bytes)"
    )


def dumps(value: Any) -> str:
    """Compact JSON, the one serialization the SQLite store keeps and binds."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def check_document(doc: Mapping[str, Any]) -> str:
    """Refuse a document either backend could not store (see the module docstring); answer
    its compact JSON (``dumps``), which the SQLite store keeps.

    Ordinary documents are screened by two C encoders instead of a walk in Python: JSON
    refuses NaN and types JSON has not; BSON refuses non-string keys, NUL in keys, integers
    past 64 bits and lone surrogates, and measures the size. What neither sees is bounded
    from the JSON text: a key starting with ``$`` shows as ``{"$`` or ``,"$`` (a quote
    inside a string is escaped), and nesting is at most the number of brackets. Only a
    document failing the screen is walked, to refuse it naming the field (or to accept it:
    ``,"$`` may also start a string in an array).
    """
    try:
        text = dumps(doc)
        size = len(bson.encode(doc)) + _ID_BYTES
    except Exception as error:  # noqa: BLE001 - any encoder refusal means: find the field
        _walk(doc)
        raise Invalid(f"document: cannot be stored ({type(error).__name__})") from None
    if _may_hold_dollar_key(text) or text.count("{") + text.count("[") > MAX_DEPTH:
        size = _walk(doc)
    if size > MAX_DOCUMENT_BYTES:
        raise _too_large(size)
    return text


def _may_hold_dollar_key(text: str) -> bool:
    """Whether compact JSON may hold a key starting with ``$``: one shows as ``"$`` right
    after ``{`` or ``,``. (A quote inside a string is escaped, so ``"$`` elsewhere starts a
    string value or sits in one.)"""
    at = text.find('"$')
    while at > 0:
        if text[at - 1] in "{,":
            return True
        at = text.find('"$', at + 2)
    return False


def _walk(doc: Mapping[str, Any]) -> int:
    """The exact check, in Python: the BSON size, or ``Invalid`` naming the field."""
    try:
        return _doc_size(doc, 1) + _ID_BYTES
    except _Refused as refused:
        raise _invalid(refused) from None


def check_update(update: Mapping[str, Any]) -> None:
    """Refuse an update whose paths or values either backend could not store. A value set
    at ``a.b`` sits two levels below the document, which counts towards ``MAX_DEPTH``."""
    size = 0
    for fields in update.values():
        if not isinstance(fields, Mapping):
            continue  # the backend refuses a malformed update with its own message
        for path, value in fields.items():
            segments = path.split(".") if isinstance(path, str) else [path]
            for i, segment in enumerate(segments):
                try:
                    if not segment:
                        raise _Refused("an empty field name")
                    _key_size(segment)
                except _Refused as refused:
                    raise _invalid(refused, segments[: i + 1]) from None
            try:
                size += _size(value, len(segments))
            except _Refused as refused:
                raise _invalid(refused, segments) from None
    if size > MAX_DOCUMENT_BYTES:
        raise _too_large(size)


def _filter_value(value: Any, depth: int) -> None:
    """Values a filter compares with: integers and strings a driver could not send."""
    kind = type(value)
    if kind is str:
        if not value.isascii():
            _utf8_size(value)
    elif kind is int:
        if not INT64_MIN <= value <= INT64_MAX:
            raise _Refused("integer outside the signed 64-bit range")
    elif kind is float or kind is bool or value is None:
        return
    elif kind is dict or kind is list or kind is tuple or isinstance(value, Mapping):
        if depth > MAX_DEPTH:
            raise _Refused(f"nested deeper than {MAX_DEPTH} levels")
        items = value.items() if kind is dict or isinstance(value, Mapping) \
            else enumerate(value)
        for key, item in items:
            try:
                _filter_value(item, depth + 1)
            except _Refused as refused:
                # operators ($in, $gt, ...) and list positions are not part of the field name
                if isinstance(key, str) and not key.startswith("$"):
                    refused.path.append(key)
                raise
    elif isinstance(value, str | int):
        _filter_value(str(value) if isinstance(value, str) else int(value), depth)


def check_filter(filter: Mapping[str, Any]) -> None:
    """Refuse a filter holding a value neither backend can compare with (a 2**64, a lone
    surrogate), naming its field."""
    try:
        _filter_value(filter, 1)
    except _Refused as refused:
        raise _invalid(refused) from None


ProjectionTree = dict[str, Any]  # field -> True (the whole field) or a ProjectionTree


def projection_tree(keys: Sequence[str]) -> ProjectionTree:
    """Parse ``keys`` (dotted paths) into a tree; a field asked for whole covers any of its
    sub-paths also asked for (``r`` and ``r.cpu`` is ``r``)."""
    tree: ProjectionTree = {}
    for key in keys:
        segments = _key_path(key)
        node = tree
        for segment in segments[:-1]:
            child = node.setdefault(segment, {})
            if child is True:
                break
            node = child
        else:
            node[segments[-1]] = True
    return tree


def _key_path(key: Any) -> list[str]:
    if not isinstance(key, str):
        raise Invalid("keys: a key must be a string", field="keys")
    segments = key.split(".")
    for segment in segments:
        try:
            if not segment:
                raise _Refused("an empty field name")
            _key_size(segment)
        except _Refused as refused:
            raise Invalid(f"keys: {render_key(key)!r} is not a field path ({refused.reason})",
                          field="keys") from None
    return segments


_MISSING: Any = object()


def _pick(value: Any, tree: ProjectionTree) -> Any:
    if isinstance(value, Mapping):
        out = {}
        for key, item in value.items():
            sub = tree.get(key)
            if sub is None:
                continue
            picked = item if sub is True else _pick(item, sub)
            if picked is not _MISSING:
                out[key] = picked
        return out or _MISSING
    if isinstance(value, list):
        items = [_pick(item, tree) for item in value]
        return [item for item in items if item is not _MISSING] or _MISSING
    return _MISSING


def project(doc: Mapping[str, Any], tree: ProjectionTree, id_field: str) -> dict[str, Any]:
    """``doc`` reduced to the fields of ``tree`` (and its id), in the stored order. Through
    an array a sub-path applies to each object in it; scalars there are dropped, and an
    object or array left with nothing asked for is left out."""
    out = {}
    for key, value in doc.items():
        sub = tree.get(key)
        if key == id_field or sub is True:
            out[key] = value
        elif sub is not None:
            picked = _pick(value, sub)
            if picked is not _MISSING:
                out[key] = picked
    return out
