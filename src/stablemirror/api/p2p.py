"""P2P at the edge: `GET /v2/<name>/blobs/<digest>/torrent` (behind the token flow like a
blob pull, plus the node's cluster credential in headers) and the tracker `GET /p2p/announce`
(the credential in its query: libtorrent sends no headers). docs/p2p.md."""

from __future__ import annotations

from aiohttp import web

from stablemirror.api.context import context
from stablemirror.api.keys import REGISTRY
from stablemirror.oci.errors import BlobUnknown, Denied
from stablemirror.p2p.edge import EdgeSwarms, NodeCredential

EDGE_SWARMS = web.AppKey("edge_swarms", EdgeSwarms)
CLUSTER_HEADER = "X-Stablemirror-P2P-Cluster"
NODE_HEADER = "X-Stablemirror-P2P-Node"
SIG_HEADER = "X-Stablemirror-P2P-Sig"


async def torrent(request: web.Request, name: str, digest: str) -> web.StreamResponse:
    swarms = request.app.get(EDGE_SWARMS)
    if swarms is None:
        raise BlobUnknown(digest=digest, reason="p2p is off here")
    who = NodeCredential(request.headers.get(CLUSTER_HEADER, ""),
                         request.headers.get(NODE_HEADER, ""),
                         request.headers.get(SIG_HEADER, ""))
    if not swarms.admits(who):
        raise Denied(reason="no valid p2p node credential")
    source = await request.app[REGISTRY].open_blob(context(request), name, digest)
    if source.path is None:  # still arriving here, or in a remote store: plain HTTP then
        raise BlobUnknown(digest=digest, reason="no local copy to make metadata from")
    base = f"{request.scheme}://{request.host}"
    data = await swarms.torrent(source.digest.hex, source.path, who, f"{base}/p2p/announce",
                                f"{base}/v2/{name}/blobs/{source.digest}")
    return web.Response(body=data, content_type="application/x-bittorrent")


async def announce(request: web.Request) -> web.StreamResponse:
    swarms = request.app.get(EDGE_SWARMS)
    if swarms is None:
        raise web.HTTPNotFound()
    body = swarms.announce(request.rel_url.raw_query_string, request.remote or "")
    return web.Response(body=body, content_type="text/plain")


def add_p2p_routes(app: web.Application) -> None:
    app.router.add_get("/p2p/announce", announce)
