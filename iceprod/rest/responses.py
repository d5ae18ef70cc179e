"""Response models: what each handler method answers, declared with ``@responds``.

Every model is one ``$defs`` entry of ``resources/schemas/responses.schema.json`` (which
shares definitions such as ``requirements`` with the request schemas in ``api.schema.json``
by ``$ref``). A handler declares the models a method may answer::

    @responds("Task")
    @requires("read:datasets", dataset="read")
    async def get(self, dataset_id, task_id):
        task = await self.db.tasks.get_in(task_id, {"dataset_id": dataset_id})
        self.reply(task)  # or self.reply(task, "HeldTask"): another model it declares

and ``APIHandler.reply`` *projects* the document onto the model before sending it: an object
model that closes its properties (``"additionalProperties": false``) keeps only the fields it
declares, recursively (through ``$ref``, ``items``, ``properties`` and
``additionalProperties``), so an internal store field never reaches a client. Fields a model
declares are the public contract; ``/openapi.json`` documents each operation's success body
with the same models (``iceprod.rest.openapi``).

With ``ICEPROD_CHECK_RESPONSES=1`` (tests set it) every JSON success answer is also
validated against its model after projection, and a mismatch is logged as an error and
answered 500 (``ResponseMismatch``): the whole test suite is then a contract test of the
models. Off by default, so production pays only the projection.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Mapping
from typing import Any, TypeVar
from urllib.parse import urljoin

from iceprod.common.schema import SCHEMA_BASE, load_schema, registry, schema_problems

RESPONSES = "responses"
RESPONSES_URI = f"{SCHEMA_BASE}{RESPONSES}.schema.json"
CHECK_ENV = "ICEPROD_CHECK_RESPONSES"
F = TypeVar("F", bound=Callable[..., Any])


class ResponseMismatch(RuntimeError):
    """A success answer that does not match its declared model (a server bug)."""


def check_enabled() -> bool:
    """Whether answers are validated against their models (the test/debug switch)."""
    return os.environ.get(CHECK_ENV, "") not in ("", "0")


def model_ref(name: str) -> dict[str, str]:
    """A ``$ref`` to model ``name`` (absolute, as the schema registry resolves it)."""
    if name not in load_schema(RESPONSES)["$defs"]:
        raise KeyError(f"no response model {name!r} in {RESPONSES}.schema.json")
    return {"$ref": f"{RESPONSES_URI}#/$defs/{name}"}


def responds(*models: str, media: str | tuple[str, ...] = ()) -> Callable[[F], F]:
    """Declare what a handler method answers on success: one or more JSON models (the first
    is what ``reply`` uses unless told), and/or the ``media`` type(s) of a body that is not
    JSON (a file, HTML, Prometheus text, CSV, an event stream). Neither declares an answer
    without a body (a redirect)."""
    for name in models:
        model_ref(name)  # an unknown model fails at import, not at the first request

    def deco(fn: F) -> F:
        fn.response_models = tuple(models)  # type: ignore[attr-defined]
        fn.response_media = (media,) if isinstance(media, str) else tuple(media)  # type: ignore[attr-defined]
        return fn

    return deco


# -- projection ------------------------------------------------------------------------------


@functools.cache
def _resolve(ref: str) -> tuple[Mapping[str, Any], str]:
    """The schema an absolute ``$ref`` names, and the base URI its own ``$ref``s use."""
    uri, _, pointer = ref.partition("#")
    node: Any = registry().contents(uri)
    for part in [p for p in pointer.split("/") if p]:
        node = node[part.replace("~1", "/").replace("~0", "~")]
    return node, uri


def _follow(schema: Mapping[str, Any], base: str) -> tuple[Mapping[str, Any], str]:
    while "$ref" in schema:
        schema, base = _resolve(urljoin(base, str(schema["$ref"])))
    return schema, base


Projector = Callable[[Any], Any]
"""Reduces a value to what its schema declares; ``None`` stands for "keep it as it is"."""


def project(data: Any, model: str) -> Any:
    """``data`` reduced to what model ``model`` declares (see the module's doc)."""
    projector = _projector(model)
    return data if projector is None else projector(data)


@functools.cache
def _projector(model: str) -> Projector | None:
    """Model ``model`` compiled once into a function (the schema is walked, and every
    ``$ref`` resolved, here rather than on each answer)."""
    return _compile(model_ref(model), RESPONSES_URI, {})


def _compile(schema: Mapping[str, Any], base: str,
             seen: dict[tuple[int, str], Projector | None]) -> Projector | None:
    schema, base = _follow(schema, base)
    key = (id(schema), base)
    if key in seen:  # a schema that contains itself: leave its inner values alone
        return seen[key]
    seen[key] = None
    props: Mapping[str, Any] = schema.get("properties", {})
    extra = schema.get("additionalProperties", True)
    items = schema.get("items")
    out: Projector | None = None
    if props or extra is not True:
        subs = {name: _compile(sub, base, seen) for name, sub in props.items()}
        rest = _compile(extra, base, seen) if isinstance(extra, Mapping) else None
        out = _object(subs, extra is not False, rest)
    elif isinstance(items, Mapping) and (each := _compile(items, base, seen)) is not None:
        out = _array(each)
    seen[key] = out
    return out


def _object(subs: dict[str, Projector | None], open_: bool, rest: Projector | None
            ) -> Projector:
    if not open_ and not any(subs.values()):
        names = frozenset(subs)

        def closed(data: Any) -> Any:
            if not isinstance(data, dict):
                return data
            return {k: v for k, v in data.items() if k in names}
        return closed

    def project_object(data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        out = {}
        for k, v in data.items():
            if k in subs:
                sub = subs[k]
            elif open_:
                sub = rest
            else:
                continue
            out[k] = v if sub is None else sub(v)
        return out
    return project_object


def _array(each: Projector) -> Projector:
    def project_array(data: Any) -> Any:
        return [each(v) for v in data] if isinstance(data, list) else data
    return project_array


def check(data: Any, model: str, where: str) -> None:
    """Raise ``ResponseMismatch`` unless ``data`` matches model ``model``."""
    problems = schema_problems(data, model_ref(model))
    if problems:
        shown = "; ".join(f"{f}: {m}" if f else m for f, m in problems[:5])
        raise ResponseMismatch(f"{where}: answer does not match response model "
                               f"{model!r}: {shown}")
