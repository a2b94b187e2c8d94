"""nginx as a peer: a `proxy_cache` pull-through cache in front of an upstream (the product
seed's edge-cache example), and a static file server (sendfile) for the blob GET's physical
limit.  nginx runs as a child of the harness (`daemon off`, its own process group) with its
prefix, pid file, temp paths and error log in the run's temp dir; it is ready, like the
registries, when `GET /v2/` answers 200."""

from __future__ import annotations

import os
import pwd
import shutil
from pathlib import Path

from harness.common import HOST
from harness.servers import Server, free_port

NGINX = "nginx"  # the server name of the nginx peers in results and logs


def _config(prefix: Path, port: int, workers: int, http_extra: str, locations: str) -> str:
    temp = prefix / "temp"
    temp.mkdir(parents=True, exist_ok=True)
    # as root, nginx would switch its workers to `nobody`, who cannot read the 0700 temp dir;
    # keep them as the harness's own user (not root: the directive is then meaningless)
    user = f"user {pwd.getpwuid(os.geteuid()).pw_name};\n" if os.geteuid() == 0 else ""
    temps = "\n".join(f"    {kind}_temp_path {temp / kind};"
                      for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    return f"""{user}daemon off;
master_process on;
worker_processes {workers};
pid {prefix / 'nginx.pid'};
error_log {prefix / 'error.log'} error;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    default_type application/octet-stream;
{temps}
    keepalive_timeout 65;
{http_extra}
    server {{
        listen {HOST}:{port};
{locations}
    }}
}}
"""


def _server(work: Path, name: str, workers: int, http_extra: str, locations: str) -> Server:
    exe = shutil.which("nginx") or "/usr/sbin/nginx"
    prefix = work / f"{name}-data"  # ServerSet.stop removes `<name>-data`
    prefix.mkdir()
    port = free_port()
    conf = prefix / "nginx.conf"
    conf.write_text(_config(prefix, port, workers, http_extra, locations))
    argv = [exe, "-p", str(prefix), "-e", str(prefix / "error.log"), "-c", str(conf)]
    return Server(name, port, argv, work / f"{name}.log")


def nginx_proxy_cache_server(work: Path, name: str, upstream: str, workers: int,
                             max_size_mib: int) -> Server:
    """proxy_cache in front of `upstream` (http://HOST:PORT), as in the edge-cache example,
    plus: one upstream fetch per key (`proxy_cache_lock`, with timeouts long enough for a
    1 GiB blob on a slow link), the key is the URI alone (Authorization or Host must not
    split entries), buffering on (the cache is filled from nginx's own buffers)."""
    cache = work / f"{name}-data" / "cache"
    http_extra = (f"    proxy_cache_path {cache} levels=1:2 keys_zone=ai_mirror:10m "
                  f"inactive=7d max_size={max_size_mib}m use_temp_path=off;")
    locations = f"""        location / {{
            proxy_cache ai_mirror;
            proxy_pass {upstream};
            proxy_cache_valid 200 7d;
            proxy_cache_key $uri;
            proxy_cache_lock on;
            proxy_cache_lock_timeout 600s;
            proxy_cache_lock_age 600s;
            proxy_buffering on;
            proxy_read_timeout 600s;
        }}"""
    return _server(work, name, workers, http_extra, locations)


def nginx_static_server(work: Path, name: str, url_path: str, file: Path,
                        workers: int) -> Server:
    """`file` served at `url_path` by sendfile, and `{}` at /v2/ (the readiness check)."""
    http_extra = "    sendfile on;\n    tcp_nopush on;"
    locations = f"""        location = /v2/ {{ return 200 '{{}}'; }}
        location = {url_path} {{ alias {file}; }}"""
    return _server(work, name, workers, http_extra, locations)
