"""How every failure becomes an HTTP answer: a status code and one line of ``detail``.

A user's mistake is never a 500: a parameter or body the API cannot use is 422 (FastAPI's
own validation errors too, rewritten as one line naming the field), an unknown id, name or
path is 404, a file outside the products tier is 403. What the server depends on is told
apart from its own bugs: an unreadable registry or a Dagster that does not answer is 503, a
Dagster that answers with an error is 502; anything else is a bug, 500, still one line.
Every body is ``{"detail": "..."}``, the shape FastAPI gives its own errors.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from dsa110_assets.api.dagster_client import DagsterError, DagsterUnavailable
from dsa110_assets.api.inputs import InputError
from dsa110_assets.api.queries import RegistryUnavailable

log = logging.getLogger("dsa110_assets.api")


def one_line(text: object) -> str:
    r"""Return ``text`` as one printable line: newlines and other controls escaped.

    Messages quote what the user sent and file names from the registry; neither may break
    the line (as ``dsa110``'s ``display_name``, not imported: the CLI package loads numpy).

    Examples
    --------
    >>> one_line("bad\nvalue")
    'bad\\nvalue'
    """
    line = "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in str(text))
    return line or "error"


def describe_validation(errors: Sequence[dict[str, Any]]) -> str:
    """Return FastAPI's validation errors as one line: ``where: what`` for each, ``; ``-joined.

    Examples
    --------
    >>> describe_validation([{"loc": ("body", "start"), "msg": "Field required"}])
    'body.start: Field required'
    """
    parts = []
    for error in errors:
        if error.get("type") == "json_invalid":
            where = "body"
            what = f"not valid JSON ({error.get('ctx', {}).get('error', 'unreadable')})"
        else:
            where = ".".join(str(p) for p in error.get("loc", ())) or "request"
            what = error.get("msg", "invalid")
        parts.append(f"{where}: {what}")
    return one_line("; ".join(parts) or "invalid request")


def _answer(status: int, detail: object) -> JSONResponse:
    return JSONResponse({"detail": one_line(detail)}, status_code=status)


async def _validation(_request: Request, exc: RequestValidationError) -> JSONResponse:
    return _answer(422, describe_validation(exc.errors()))


async def _input(_request: Request, exc: InputError) -> JSONResponse:
    return _answer(422, exc)


async def _http(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
    response = _answer(exc.status_code, exc.detail)
    if exc.headers:
        response.headers.update(exc.headers)
    return response


async def _registry(_request: Request, exc: RegistryUnavailable) -> JSONResponse:
    return _answer(503, exc)


async def _dagster_down(_request: Request, exc: DagsterUnavailable) -> JSONResponse:
    return _answer(503, exc)


async def _dagster_error(_request: Request, exc: DagsterError) -> JSONResponse:
    return _answer(502, exc)


async def _bug(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unexpected error serving %s %s", request.method, request.url.path)
    return _answer(500, f"internal error ({type(exc).__name__}): {exc}")


def install_handlers(app: FastAPI) -> None:
    """Register the handlers above on ``app``."""
    app.add_exception_handler(RequestValidationError, _validation)
    app.add_exception_handler(InputError, _input)
    app.add_exception_handler(StarletteHTTPException, _http)
    app.add_exception_handler(RegistryUnavailable, _registry)
    app.add_exception_handler(DagsterUnavailable, _dagster_down)
    app.add_exception_handler(DagsterError, _dagster_error)
    app.add_exception_handler(Exception, _bug)
