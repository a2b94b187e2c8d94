"""P2P at the edge: `GET /v2/<name>/blobs/<digest>/torrent` and `.../pieces` (the piece
hand-out), both behind the token flow like a blob pull plus the node's cluster credential
in headers, and the tracker `GET /p2p/announce` (the credential in its query: libtorrent
sends no headers). docs/p2p.md."""

from __future__ import annotations

from collections.abc import Callable

from aiohttp import web

from stablemirror.api.context import context
from stablemirror.api.keys import REGISTRY
from stablemirror.oci.errors import BlobUnknown, Denied, RangeInvalid
from stablemirror.p2p.edge import EdgeSwarms, NodeCredential, NoTorrentHere
from stablemirror.p2p.handout import parse_runs

EDGE_SWARMS = web.AppKey("edge_swarms", EdgeSwarms)
# A node's swarms, per blob (mirror/p2p_source.py MirrorP2P.snapshot); a callable, so this
# module does not import the mirror's P2P side.
NODE_P2P_STATUS: web.AppKey[Callable[[], dict[str, object]]] = web.AppKey("node_p2p_status")
CLUSTER_HEADER = "X-Stablemirror-P2P-Cluster"
NODE_HEADER = "X-Stablemirror-P2P-Node"
SIG_HEADER = "X-Stablemirror-P2P-Sig"


def _admitted(request: web.Request, digest: str) -> tuple[EdgeSwarms, NodeCredential]:
    swarms = request.app.get(EDGE_SWARMS)
    if swarms is None:
        raise BlobUnknown(digest=digest, reason="p2p is off here")
    who = NodeCredential(request.headers.get(CLUSTER_HEADER, ""),
                         request.headers.get(NODE_HEADER, ""),
                         request.headers.get(SIG_HEADER, ""))
    if not swarms.admits(who):
        raise Denied(reason="no valid p2p node credential")
    return swarms, who


async def torrent(request: web.Request, name: str, digest: str) -> web.StreamResponse:
    swarms, who = _admitted(request, digest)
    source = await request.app[REGISTRY].open_blob(context(request), name, digest)
    if source.path is None:  # still arriving here, or in a remote store: plain HTTP then
        raise BlobUnknown(digest=digest, reason="no local copy to make metadata from")
    base = f"{request.scheme}://{request.host}"
    data = await swarms.torrent(source.digest.hex, source.path, who, f"{base}/p2p/announce",
                                f"{base}/v2/{name}/blobs/{source.digest}")
    return web.Response(body=data, content_type="application/x-bittorrent")


async def pieces(request: web.Request, name: str, digest: str) -> web.StreamResponse:
    """The next part of the blob this node fetches from here and shares (p2p/handout.py):
    `{"group", "offset", "length"}`, or 204 when every part is handed out. Query: `done`
    (the group it finished), `stalled=1` and `missing` (runs of pieces it lacks), `final=1`
    (it has the whole blob: record `done`, hand out nothing). A GET that
    grants a lease, so that it is authorized as a pull like the bytes it leads to."""
    swarms, who = _admitted(request, digest)
    try:
        done = int(request.query["done"]) if "done" in request.query else None
        missing = parse_runs(request.query.get("missing", ""))
    except ValueError as e:
        raise RangeInvalid(reason=f"bad piece hand-out query: {e}") from None
    source = await request.app[REGISTRY].open_blob(context(request), name, digest)
    try:
        grant = await swarms.claim(source.digest.hex, source.size, who, done,
                                   request.query.get("stalled") == "1", missing,
                                   final=request.query.get("final") == "1")
    except NoTorrentHere:
        raise BlobUnknown(digest=digest, reason="no torrent made here for this blob") from None
    if grant is None:
        return web.Response(status=204)
    return web.json_response({"group": grant.group, "offset": grant.offset,
                              "length": grant.length})


async def announce(request: web.Request) -> web.StreamResponse:
    swarms = request.app.get(EDGE_SWARMS)
    if swarms is None:
        raise web.HTTPNotFound()
    body = swarms.announce(request.rel_url.raw_query_string, request.remote or "")
    return web.Response(body=body, content_type="text/plain")


async def node_status(request: web.Request) -> web.StreamResponse:
    """A node's P2P pulls per blob: bytes from peers and from the edge, uploaded, rejected,
    peers (outside /v2 and without auth, like /status and /metrics)."""
    snapshot = request.app.get(NODE_P2P_STATUS)
    if snapshot is None:
        raise web.HTTPNotFound()
    return web.json_response(snapshot())


def add_p2p_routes(app: web.Application) -> None:
    app.router.add_get("/p2p/announce", announce)
    app.router.add_get("/p2p/status", node_status)
