"""Logs: stdout, stderr, stdlog and other named texts attached to a task.

A log is stored as one metadata document in ``logs`` (``log_id, dataset_id, task_id, name,
timestamp`` plus ``chunks``, how many pieces its text has, and ``bytes``, its UTF-8 size)
and its text in ``log_chunks``, ``CHUNK_CHARS`` characters per document (at most 4 MiB of
UTF-8), so no log the API accepts comes near MongoDB's 16 MiB document limit and both
backends store the same way. A log of at most ``INLINE_CHARS`` characters keeps its text
in the metadata document instead (``data``, no ``chunks``): one write. Readers get the log
as it was posted, ``data`` included; the bookkeeping fields never leave this module.

Writes keep a log whole or absent: the chunks go in first and the metadata last (a reader
finds a log only once all its text is there), and a failed write removes its chunks.
Deletion removes the metadata first, then the chunks; a reader that raced a deletion and
finds fewer chunks than the metadata promised treats the log as gone. Logs with their
``data`` inline (small ones, and any written before chunking) are answered as they are.

Reading a list fetches the text of at most ``READ_BATCH_BYTES`` of logs per query, so no
single result needs more than one document's worth of data.
"""

from __future__ import annotations

from collections.abc import Sequence

from iceprod.common.errors import DuplicateKey, NotFound
from iceprod.db.base import ALL, Page, Paging, Repository
from iceprod.db.storable import check_document
from iceprod.db.store import Collection, CollectionSpec, Doc, Filter, Index, Store

CHUNK_CHARS = 1 << 20
INLINE_CHARS = 64 * 1024
"""A log of at most this many characters keeps its text in its metadata document (one
write; most logs, every log inline in a completion): at most 256 KiB of UTF-8."""
READ_BATCH_BYTES = 16 * 1024 * 1024
_HIDDEN = frozenset({"chunks", "bytes"})

CHUNKS_SPEC = CollectionSpec(
    name="log_chunks",
    id_field="chunk_id",
    columns={"log_id": "TEXT", "seq": "INTEGER", "dataset_id": "TEXT", "task_id": "TEXT"},
    indexes=(
        Index((("log_id", 1), ("seq", 1)), unique=True),
        Index((("dataset_id", 1), ("task_id", 1))),
    ),
)


def _utf8_bytes(text: str) -> int:
    return len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass"))


class LogsRepo(Repository):
    spec = CollectionSpec(
        name="logs",
        id_field="log_id",
        columns={"dataset_id": "TEXT", "task_id": "TEXT", "name": "TEXT", "timestamp": "TEXT"},
        indexes=(
            Index((("task_id", 1), ("timestamp", -1))),
            Index((("dataset_id", 1),)),
        ),
    )
    extra_specs = (CHUNKS_SPEC,)
    kind = "log"

    def __init__(self, store: Store) -> None:
        super().__init__(store)
        self.chunks: Collection = store.collection(CHUNKS_SPEC)

    # -- writes --------------------------------------------------------------------------------

    async def create(self, doc: Doc) -> Doc:
        """Store a log (``data`` is its text) and answer it as given."""
        data: str = doc.get("data") or ""
        if len(data) <= INLINE_CHARS:  # small: one document, text inline
            meta = {**doc, "data": data, "bytes": _utf8_bytes(data)}
            check_document(meta)
            await self.coll.insert_one(meta)
            return doc
        meta = {k: v for k, v in doc.items() if k != "data"}
        log_id = meta.get(self.id_field)
        pieces = [data[i:i + CHUNK_CHARS] for i in range(0, len(data), CHUNK_CHARS)]
        meta.update(chunks=len(pieces), bytes=_utf8_bytes(data))
        chunks = [
            {"chunk_id": f"{log_id}-{seq:06d}", "log_id": log_id, "seq": seq,
             "dataset_id": meta.get("dataset_id"), "task_id": meta.get("task_id"),
             "data": piece}
            for seq, piece in enumerate(pieces)
        ]
        check_document(meta)  # refuse a bad log before any of it is written
        try:
            await self.chunks.insert_many(chunks)
        except DuplicateKey:
            raise  # nothing was inserted: the chunks there are another log's
        except BaseException:
            await self._remove(chunks)
            raise
        try:
            await self.coll.insert_one(meta)
        except BaseException:
            await self._remove(chunks)
            raise
        return doc

    async def _remove(self, chunks: list[Doc]) -> None:
        if chunks:
            await self.chunks.delete_many({"chunk_id": {"$in": [c["chunk_id"] for c in chunks]}})

    async def delete_for_task(self, dataset_id: str, task_id: str) -> int:
        """Delete a task's logs, text included; answers how many logs there were."""
        return await self._delete({"dataset_id": dataset_id, "task_id": task_id})

    async def delete_for_dataset(self, dataset_id: str) -> int:
        """Delete every log of a dataset, text included; answers how many there were."""
        return await self._delete({"dataset_id": dataset_id})

    async def _delete(self, scope: Filter) -> int:
        deleted = await self.coll.delete_many(scope)
        await self.chunks.delete_many(scope)
        return deleted

    # -- reads ---------------------------------------------------------------------------------

    async def _get_where(self, doc_id: str, scope: Filter, keys: Sequence[str] | None
                         ) -> Doc:
        docs = await self._read({**scope, self.id_field: doc_id}, keys)
        if not docs:
            raise NotFound(f"{self.kind} not found")
        return docs[0]

    async def find(self, doc_id: str) -> Doc | None:
        docs = await self._read({self.id_field: doc_id}, None)
        return docs[0] if docs else None

    async def page(self, paging: Paging = ALL, *, dataset_id: str) -> Page:
        """A dataset's logs in id order, a page at a time (see ``Paging``), text included."""
        return await self._page({"dataset_id": dataset_id}, paging)

    async def count(self, *, dataset_id: str) -> int:
        """How many logs a dataset has."""
        return await self._count({"dataset_id": dataset_id})

    async def _page(self, filter: Filter, paging: Paging = ALL) -> Page:
        keys = paging.keys
        wanted = self._wants_data(keys)
        page = await super()._page(
            filter, Paging(self._stored_keys(keys, wanted), paging.limit, paging.after))
        return Page(await self._shown(page.docs, keys, wanted), page.next_after)

    async def for_task(
        self, dataset_id: str, task_id: str, num: int | None, group: bool, desc: bool,
        keys: list[str] | None = None,
    ) -> list[Doc]:
        """A task's logs by time; ``group`` keeps the newest of each name."""
        wanted = self._wants_data(keys)
        stored = self._stored_keys(keys, wanted)
        if group and stored is not None:
            stored = [*stored, "name"]
        docs = await self.coll.find(
            {"dataset_id": dataset_id, "task_id": task_id},
            keys=stored,
            sort=[("timestamp", -1 if (desc or group) else 1), ("log_id", 1)],
            limit=None if group else num,
        )
        if group:
            seen: set[str] = set()
            newest = []
            for d in docs:
                name = d.get("name", "")
                if name not in seen:
                    seen.add(name)
                    newest.append(d)
            if not desc:
                newest.reverse()
            docs = newest[:num] if num else newest
        return await self._shown(docs, keys, wanted)

    async def _read(self, filter: Filter, keys: Sequence[str] | None) -> list[Doc]:
        wanted = self._wants_data(keys)
        docs = await self.coll.find(filter, keys=self._stored_keys(keys, wanted))
        return await self._shown(docs, keys, wanted)

    @staticmethod
    def _wants_data(keys: Sequence[str] | None) -> bool:
        return keys is None or "data" in keys

    @staticmethod
    def _stored_keys(keys: Sequence[str] | None, wanted: bool) -> list[str] | None:
        """The metadata fields a projection needs: its own, and ``chunks`` for the text."""
        if keys is None:
            return None
        return [*keys, *_HIDDEN] if wanted else list(keys)

    async def _shown(self, docs: list[Doc], keys: Sequence[str] | None, wanted: bool
                     ) -> list[Doc]:
        """Metadata documents as callers see them: text joined in when asked for, the
        bookkeeping fields and any field only fetched for grouping left out."""
        texts = await self._texts(docs) if wanted else {}
        dropped = {*_HIDDEN, "name"} if keys is not None and "name" not in keys else _HIDDEN
        shown = []
        for doc in docs:
            log_id = doc[self.id_field]
            if wanted and "chunks" in doc:
                if log_id not in texts:
                    continue  # deleted while we read it
                doc["data"] = texts[log_id]
            shown.append({k: v for k, v in doc.items() if k not in dropped})
        return shown

    async def _texts(self, docs: list[Doc]) -> dict[str, str]:
        """The text of each chunked log among ``docs`` whose chunks are all there."""
        texts: dict[str, str] = {}
        batch: list[Doc] = []
        size = 0
        for doc in docs:
            if "chunks" not in doc:
                continue
            if not doc["chunks"]:
                texts[doc[self.id_field]] = ""
                continue
            if batch and size + doc.get("bytes", 0) > READ_BATCH_BYTES:
                texts.update(await self._read_chunks(batch))
                batch, size = [], 0
            batch.append(doc)
            size += doc.get("bytes", 0)
        if batch:
            texts.update(await self._read_chunks(batch))
        return texts

    async def _read_chunks(self, docs: list[Doc]) -> dict[str, str]:
        expected = {doc[self.id_field]: doc["chunks"] for doc in docs}
        rows = await self.chunks.find(
            {"log_id": {"$in": list(expected)}}, keys=["log_id", "data"],
            sort=[("log_id", 1), ("seq", 1)],
        )
        pieces: dict[str, list[str]] = {}
        for row in rows:
            pieces.setdefault(row["log_id"], []).append(row["data"])
        return {
            log_id: "".join(parts) for log_id, parts in pieces.items()
            if len(parts) == expected[log_id]
        }

