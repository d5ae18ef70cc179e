"""The shared part of every repository: lookup by id and cursor pagination.

Queries live in this package: a repository's public methods take typed parameters (an id,
``dataset_id``, ``status: Sequence[str] | None``, a ``Paging``) and build their filters
inside; the filter-taking helpers here are ``_``-prefixed, for repositories only."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from iceprod.common.errors import BadTransition, Invalid, NotFound
from iceprod.common.states import allowed_from, statuses
from iceprod.common.timeutil import iso
from iceprod.db.store import CollectionSpec, Doc, Filter, Sort, Store, Update

MAX_PAGE = 10_000


@dataclass
class Page:
    """One page of a list: the documents and the cursor of the next page (None at the end)."""

    docs: list[Doc]
    next_after: str | None


@dataclass(frozen=True)
class Paging:
    """Which page of a list to answer: the fields to project (``keys``), at most ``limit``
    documents (``MAX_PAGE`` when absent), resuming after the opaque cursor ``after``."""

    keys: Sequence[str] | None = None
    limit: int | None = None
    after: str | None = None


ALL = Paging()


class OneOf(list[Any]):
    """Values of which a matching document's field holds any one (``$in``); made by
    ``one_of``, read by ``where``."""


@dataclass(frozen=True)
class Between:
    """An inclusive range (either bound may be absent); made by ``between``, read by
    ``where``."""

    low: Any = None
    high: Any = None


def where(**criteria: Any) -> dict[str, Any]:
    """A filter from a repository method's typed parameters: a ``None`` criterion is left
    out, a ``OneOf`` means "any of these" (``$in``; empty matches nothing), a ``Between``
    an inclusive range, any other value equality (a plain list too: it is a value, never
    read as a set of alternatives)."""
    out: dict[str, Any] = {}
    for name, value in criteria.items():
        if value is None:
            continue
        if isinstance(value, OneOf):
            out[name] = {"$in": list(value)}
        elif isinstance(value, Between):
            out[name] = {op: bound for op, bound in (("$gte", value.low), ("$lte", value.high))
                         if bound is not None}
        else:
            out[name] = value
    return out


def between(low: Any, high: Any) -> Between | None:
    """An inclusive range parameter as ``where`` reads it (``None``: no criterion, when
    neither bound is given)."""
    return None if low is None and high is None else Between(low, high)


def one_of(values: Sequence[Any] | None) -> OneOf | None:
    """A typed "any of these" parameter as ``where`` reads it (``None``: no criterion; a
    ``str`` is one value, not a sequence of letters, so it is refused)."""
    if isinstance(values, str):
        raise TypeError("one_of takes a sequence of values, not a str")
    return None if values is None else OneOf(values)


def encode_cursor(last_id: str) -> str:
    return base64.urlsafe_b64encode(last_id.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> str:
    try:
        pad = "=" * (-len(cursor) % 4)
        value = base64.b64decode(cursor + pad, altchars=b"-_", validate=True).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        value = ""
    if not value:
        raise Invalid("after: not a valid cursor")
    return value


class Repository:
    """One collection's domain operations. Subclasses set ``spec`` and add methods."""

    spec: ClassVar[CollectionSpec]
    extra_specs: ClassVar[tuple[CollectionSpec, ...]] = ()  # more collections it keeps
    kind: ClassVar[str] = "document"
    machine: ClassVar[str] = ""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.coll = store.collection(self.spec)

    @property
    def id_field(self) -> str:
        return self.spec.id_field

    async def get(self, doc_id: str, keys: Sequence[str] | None = None) -> Doc:
        return await self._get_where(doc_id, {}, keys)

    async def get_in(self, doc_id: str, dataset_id: str, keys: Sequence[str] | None = None
                     ) -> Doc:
        """A document by id that must also belong to ``dataset_id``, so a route for one
        dataset can never hand out another's documents."""
        return await self._get_where(doc_id, {"dataset_id": dataset_id}, keys)

    async def _get_where(self, doc_id: str, scope: Filter, keys: Sequence[str] | None
                         ) -> Doc:
        doc = await self.coll.find_one({**scope, self.id_field: doc_id}, keys=keys)
        if doc is None:
            raise NotFound(f"{self.kind} not found")
        return doc

    async def find(self, doc_id: str) -> Doc | None:
        return await self.coll.find_one({self.id_field: doc_id})

    async def _page(self, filter: Filter, paging: Paging = ALL) -> Page:
        """Matching documents in id order, a page at a time (see ``Paging``)."""
        query: dict[str, Any] = dict(filter)
        if paging.after:
            query = {"$and": [query, {self.id_field: {"$gt": decode_cursor(paging.after)}}]}
        n = min(paging.limit or MAX_PAGE, MAX_PAGE)
        docs = await self.coll.find(query, keys=paging.keys, sort=[(self.id_field, 1)],
                                    limit=n + 1)
        more = len(docs) > n
        docs = docs[:n]
        nxt = encode_cursor(docs[-1][self.id_field]) if more and docs else None
        return Page(docs, nxt)

    async def _transition(
        self, query: Filter, status: str, extra: Update | None = None
    ) -> Doc:
        """Move the matching document to ``status`` with one conditional update naming the
        allowed previous states. Setting the current status again is a no-op; anything the
        state machine forbids raises ``BadTransition``."""
        update: dict[str, dict[str, Any]] = {k: dict(v) for k, v in (extra or {}).items()}
        update.setdefault("$set", {}).update({"status": status, "status_changed": iso()})
        doc = await self.coll.update_one(
            {**query, "status": {"$in": allowed_from(self.machine, status)}}, update
        )
        if doc is not None:
            return doc
        old = await self.coll.find_one(query)
        if old is None:
            raise NotFound(f"{self.kind} not found")
        if old.get("status") == status:
            return old
        raise BadTransition(old.get("status"), status)

    async def status_counts(self) -> dict[str, int]:
        """Counts of the collection's documents by status: ``{status: n}``."""
        return await self._status_counts({})

    async def _status_counts(self, filter: Filter) -> dict[str, int]:
        rows = await self.coll.group_count(filter, ["status"])
        return {r["status"]: r["count"] for r in rows if r["status"] is not None}

    async def _count(self, filter: Filter) -> int:
        return await self.coll.count(filter)

    async def _ids_grouped_by_status(self, query: Filter, sort: Sort) -> dict[str, list[str]]:
        """Ids of matching documents grouped by status (in ``sort`` order within a status):
        ``{status: [id, ...]}``; a document without a status counts as in its state
        machine's first status."""
        initial = statuses(self.machine)[0]
        out: dict[str, list[str]] = {}
        for d in await self.coll.find(query, keys=["status"], sort=sort):
            out.setdefault(d.get("status", initial), []).append(d[self.id_field])
        return out
