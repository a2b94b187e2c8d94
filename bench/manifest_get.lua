-- wrk script for bench/run.py: GET an image manifest the way a pulling client does.
-- The URL (by tag or by digest) is given on the wrk command line; this script only
-- sets the method and the Accept header that OCI/Docker clients send.
wrk.method = "GET"
wrk.headers["Accept"] = "application/vnd.oci.image.manifest.v1+json, "
  .. "application/vnd.oci.image.index.v1+json, "
  .. "application/vnd.docker.distribution.manifest.v2+json, "
  .. "application/vnd.docker.distribution.manifest.list.v2+json"
