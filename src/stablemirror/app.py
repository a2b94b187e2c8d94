"""The composition root: the one place where stores, index, services and HTTP meet."""

from __future__ import annotations

from aiohttp import web

from stablemirror.api.errors import add_api_version, oci_errors
from stablemirror.api.keys import REGISTRY
from stablemirror.api.routes import add_routes
from stablemirror.config import Settings
from stablemirror.index.db import Database
from stablemirror.index.sql import SqlIndex
from stablemirror.services.registry import HostedRegistry
from stablemirror.store.filesystem import FilesystemBlobStore

READ_BUFSIZE = 1 << 20  # larger socket reads make pushes cheaper


def build_app(settings: Settings) -> web.Application:
    store = FilesystemBlobStore(settings.data_dir)
    index = SqlIndex(Database(settings.index_url))
    app = web.Application(middlewares=[oci_errors],
                          handler_args={"read_bufsize": READ_BUFSIZE})
    app[REGISTRY] = HostedRegistry(store, index)
    app.on_response_prepare.append(add_api_version)

    async def close_index(_app: web.Application) -> None:
        await index.close()

    app.on_cleanup.append(close_index)
    add_routes(app)
    return app
