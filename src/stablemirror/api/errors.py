"""The one place where errors become HTTP responses."""

from __future__ import annotations

import json
import logging

from aiohttp import web
from aiohttp.typedefs import Handler

from stablemirror.oci.errors import OCIError

log = logging.getLogger("stablemirror.api")

API_VERSION_HEADER = {"Docker-Distribution-API-Version": "registry/2.0"}


def error_response(err: OCIError) -> web.Response:
    body = {"errors": [{"code": err.code, "message": err.describe(), "detail": err.detail}]}
    return web.Response(status=err.status, body=json.dumps(body).encode(),
                        content_type="application/json",
                        headers={**API_VERSION_HEADER, **err.headers})


@web.middleware
async def oci_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except OCIError as err:
        return error_response(err)
    except web.HTTPException as exc:
        exc.headers.update(API_VERSION_HEADER)
        raise
    except (ConnectionResetError, OSError) as exc:
        if request.transport is None or request.transport.is_closing():
            raise  # the client went away; nothing to answer
        log.exception("storage or I/O failure on %s %s", request.method, request.path)
        return error_response(OCIError(reason=type(exc).__name__))
    except Exception:
        log.exception("unhandled error on %s %s", request.method, request.path)
        return error_response(OCIError())


async def add_api_version(_request: web.Request, response: web.StreamResponse) -> None:
    """on_response_prepare: every answer, streamed or not, names the API version."""
    response.headers.update(API_VERSION_HEADER)
