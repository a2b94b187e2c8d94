"""Which analyzer a file gets: by its content (magic bytes), never by its name alone.

Containers are opened and every member analyzed in turn, nested to `MAX_DEPTH`: zip
(PyTorch checkpoints, `.keras`, `.npz`), tar (ModelPack and image layers), gzip, zstd. A name
whose extension promises one format while the content is another is itself a finding (a
pickle called `model.safetensors`), and the content is analyzed for what it is. Any error
an analyzer hits on hostile input is a finding, not a crash and not a pass.
"""

from __future__ import annotations

import ast
import bz2
import gzip
import io
import lzma
import shutil
import struct
import tarfile
import tempfile
import zipfile
import zlib
from collections.abc import Iterable
from typing import IO, Any, cast

import zstandard

from stablemirror.scanning.allowlist import Allowlist
from stablemirror.scanning.findings import Finding, Findings
from stablemirror.scanning.gguf_scan import MAGIC as GGUF_MAGIC
from stablemirror.scanning.gguf_scan import scan_gguf
from stablemirror.scanning.keras_scan import scan_h5, scan_keras_json
from stablemirror.scanning.onnx_scan import scan_onnx
from stablemirror.scanning.pickle_scan import HIGHEST_PROTOCOL, Payload, scan_pickle_stream
from stablemirror.scanning.safetensors_scan import looks_like_safetensors, scan_safetensors

MAX_DEPTH = 6
ANALYZER_VERSION = "1"  # bump when findings can change: cached results are redone
MAX_MEMBERS = 100_000
SPOOL_IN_MEMORY = 64 << 20
PICKLE_EXTENSIONS = (".pkl", ".pickle", ".bin", ".pt", ".pth", ".ckpt", ".joblib", ".dat",
                     ".mar", ".model", ".sav", ".p")
HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
NPY_MAGIC = b"\x93NUMPY"
ZIP_MAGICS = (b"PK\x03\x04", b"PK\x05\x06")
GZIP_MAGIC = b"\x1f\x8b"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
BZIP2_MAGIC = b"BZh"
XZ_MAGIC = b"\xfd7zXZ\x00"
LZMA_ALONE = b"\x5d\x00\x00"  # joblib's .lzma (the legacy LZMA_Alone format)
LZ4_MAGIC = b"\x04\x22\x4d\x18"
# kind -> the file suffix it usually has
DECOMPRESSORS = {"gzip": ".gz", "zstd": ".zst", "bzip2": ".bz2", "xz": ".xz", "zlib": ".z"}
# extension -> the content kinds it may hold
EXPECTED = {".safetensors": {"safetensors"}, ".gguf": {"gguf"}, ".npy": {"npy"},
            ".npz": {"zip"}, ".h5": {"hdf5"}, ".hdf5": {"hdf5"}, ".keras": {"zip"},
            ".pt": {"zip", "pickle"}, ".pth": {"zip", "pickle"}, ".pkl": {"pickle"},
            ".pickle": {"pickle"}, ".ckpt": {"zip", "pickle"}}
TORCH_STORAGE_DIRS = ("data/", ".data/")
WRAPPERS = ("tar", *DECOMPRESSORS)


def _sniff(head: bytes, name: str) -> str | None:
    if head.startswith(ZIP_MAGICS):
        return "zip"
    if head.startswith(GZIP_MAGIC):
        return "gzip"
    if head.startswith(ZSTD_MAGIC):
        return "zstd"
    if head.startswith(BZIP2_MAGIC) and head[3:4].isdigit():
        return "bzip2"
    if head.startswith((XZ_MAGIC, LZMA_ALONE)):
        return "xz"
    if head[:1] == b"\x78" and head[1:2] in (b"\x01", b"\x5e", b"\x9c", b"\xda"):
        return "zlib"  # a zlib header: deflate, 32 KiB window, one of the four levels
    if head.startswith(LZ4_MAGIC):
        return "lz4"
    if len(head) >= 262 and head[257:262] == b"ustar":
        return "tar"
    if head.startswith(GGUF_MAGIC):
        return "gguf"
    if head.startswith(HDF5_MAGIC):
        return "hdf5"
    if head.startswith(NPY_MAGIC):
        return "npy"
    lower = name.lower()
    if len(head) >= 2 and head[0] == 0x80 and (
            head[1] <= HIGHEST_PROTOCOL or lower.endswith(PICKLE_EXTENSIONS)):
        return "pickle"  # PROTO n; a protocol above 5 (named a pickle) the walker reports
    if looks_like_safetensors(head):
        return "safetensors"
    if lower.endswith(".onnx"):
        return "onnx"
    if lower.endswith(PICKLE_EXTENSIONS) and head[:1] in (b"(", b"c", b"]", b"}", b"l",
                                                           b"d", b"I", b"N", b"S", b"V"):
        return "pickle"  # protocol 0/1 pickles have no magic; the extension is the hint
    return None


def _extension(name: str) -> str:
    base = name.rsplit("!", 1)[-1].rsplit("/", 1)[-1].lower()
    return base[base.rfind("."):] if "." in base else ""


class Analyzer:
    def __init__(self, allow: Allowlist, spool_dir: str | None = None) -> None:
        self.allow = allow
        self.spool_dir = spool_dir  # where decompressed gzip content goes (None: the temp dir)

    def analyze(self, stream: IO[bytes], name: str) -> list[Finding]:
        out: list[Finding] = []
        self._analyze(stream, name, 0, out)
        return out

    def _analyze(self, stream: IO[bytes], name: str, depth: int, out: list[Finding]) -> None:
        found = Findings(name)
        try:
            self._dispatch(stream, name, depth, found, out)
        except Exception as e:  # hostile input: whatever broke, the file is not cleared
            found.add("unsafe_code", "unanalyzable",
                      f"analysis failed ({type(e).__name__}: {e})")
        out.extend(found.items)

    def _dispatch(self, stream: IO[bytes], name: str, depth: int, found: Findings,
                  out: list[Finding]) -> None:
        if depth > MAX_DEPTH:
            found.add("unsafe_code", "unanalyzable", f"archives nested deeper than {MAX_DEPTH}")
            return
        start = stream.tell()
        head = stream.read(512)
        stream.seek(start)
        kind = _sniff(head, name)
        ext = _extension(name)
        expected = EXPECTED.get(ext)
        # tar and gzip wrap the file a layer is named after (ModelPack packs files as tar)
        if expected is not None and kind not in expected and kind not in WRAPPERS:
            found.add("malformed", "format_mismatch",
                      f"named {ext} but the content is {kind or 'not a known model format'}")
            if kind is None:
                kind = next(iter(sorted(expected)))
        if kind == "pickle":
            legacy = head[:3] == b"\x80\x02\x8a"  # legacy torch.save: magic number first
            nested: list[Payload] = []
            scan_pickle_stream(stream, self.allow, found, legacy_torch=legacy, nested=nested)
            self._nested(stream, nested, name, depth, out)
        elif kind == "safetensors":
            scan_safetensors(stream, found)
        elif kind == "gguf":
            scan_gguf(stream, found)
        elif kind == "hdf5":
            scan_h5(stream, found)
        elif kind == "onnx":
            scan_onnx(stream, found)
        elif kind == "npy":
            self._npy(stream, found)
        elif kind == "zip":
            self._zip(stream, name, depth, found, out)
        elif kind == "tar":
            self._tar(stream, name, depth, found, out)
        elif kind in DECOMPRESSORS:
            self._decompressed(stream, kind, name, depth, out)
        elif kind == "lz4":
            found.add("unsafe_code", "unanalyzable", "lz4-compressed content cannot be "
                      "inspected here (joblib loads it transparently)")
        elif kind is None:
            nested = []
            scan_pickle_stream(stream, self.allow, found, speculative=True, nested=nested)
            self._nested(stream, nested, name, depth, out)
        if kind in ("pickle", None) and depth < MAX_DEPTH:
            stream.seek(start)
            if zipfile.is_zipfile(stream):  # a zip behind other bytes: zipfile reads it
                stream.seek(start)
                self._zip(stream, name, depth, found, out)

    def _nested(self, stream: IO[bytes], payloads: list[Payload], name: str, depth: int,
                out: list[Finding]) -> None:
        """Bytes a pickle hands to torch.load (`_load_from_bytes`): a torch file each."""
        for p in payloads[:MAX_MEMBERS]:
            inner = _Slice(stream, p.start, p.length)
            self._analyze(cast(IO[bytes], inner), f"{name}!bytes@{p.start}.pt", depth + 1, out)

    def _decompressed(self, stream: IO[bytes], kind: str, name: str, depth: int,
                      out: list[Finding]) -> None:
        """Analyze what a compressed stream holds (joblib loads .gz/.bz2/.xz/.z pickles
        transparently, ModelPack and images compress tar layers)."""
        suffix = DECOMPRESSORS[kind]
        base = name.rsplit("!", 1)[-1].rsplit("/", 1)[-1]
        inner = f"{name}!{base[:-len(suffix)] if base.endswith(suffix) else base + '.' + kind}"
        with _decompressor(kind, stream) as plain, _spooled(plain, self.spool_dir) as copy:
            self._analyze(copy, inner, depth + 1, out)

    def _npy(self, stream: IO[bytes], found: Findings) -> None:
        magic = stream.read(8)
        major = magic[6]
        if major == 1:
            n = struct.unpack("<H", stream.read(2))[0]
        elif major in (2, 3):
            n = struct.unpack("<I", stream.read(4))[0]
        else:
            found.add("malformed", "npy", f"unknown .npy version {major}")
            return
        if n > 1 << 20:
            found.add("malformed", "npy", f".npy header of {n} bytes")
            return
        header = ast.literal_eval(stream.read(n).decode("latin-1"))
        if not isinstance(header, dict) or "descr" not in header:
            found.add("malformed", "npy", ".npy header is not a dict with descr")
            return
        if "O" in repr(header["descr"]):  # object arrays are pickles after the header
            scan_pickle_stream(stream, self.allow, found)

    def _zip(self, stream: IO[bytes], name: str, depth: int, found: Findings,
             out: list[Finding]) -> None:
        try:
            archive = zipfile.ZipFile(stream)
        except zipfile.BadZipFile as e:
            found.add("malformed", "zip", f"not a readable zip archive: {e}")
            return
        with archive:
            members = [m for m in archive.infolist() if not m.is_dir()]
            if len(members) > MAX_MEMBERS:
                found.add("unsafe_code", "unanalyzable", f"{len(members)} archive members")
                return
            names = {m.filename for m in members}
            torch_roots = {n[:-len("data.pkl")] for n in names
                           if n == "data.pkl" or n.endswith("/data.pkl")}
            keras = _extension(name) == ".keras" or (
                "metadata.json" in names
                and b"keras_version" in archive.read("metadata.json")[:1 << 16])
            for script in sorted(n for n in names if _is_torchscript(n)):
                found.add("unsafe_code", "torchscript",
                          f"TorchScript program {script}: code that runs when loaded")
                break
            for member in members:
                path = f"{name}!{member.filename}"
                if _is_torch_storage(member.filename, torch_roots):
                    continue  # raw tensor bytes, read by torch as data, never unpickled
                if keras and member.filename == "config.json":
                    sub = Findings(path)
                    scan_keras_json(archive.read(member), sub)
                    out.extend(sub.items)
                    continue
                with archive.open(member) as inner:
                    self._analyze(inner, path, depth + 1, out)

    def _tar(self, stream: IO[bytes], name: str, depth: int, found: Findings,
             out: list[Finding]) -> None:
        try:
            archive = tarfile.open(fileobj=stream, mode="r:")  # noqa: SIM115 (with below)
        except tarfile.TarError as e:
            found.add("malformed", "tar", f"not a readable tar archive: {e}")
            return
        with archive:
            for count, member in enumerate(_members(archive)):
                if count >= MAX_MEMBERS:
                    found.add("unsafe_code", "unanalyzable", "too many tar members")
                    return
                if not member.isfile():
                    continue
                inner = archive.extractfile(member)
                if inner is not None:
                    with inner:
                        self._analyze(inner, f"{name}!{member.name}", depth + 1,
                                      out)


def _members(archive: tarfile.TarFile) -> Iterable[tarfile.TarInfo]:
    member = archive.next()
    while member is not None:
        yield member
        member = archive.next()


def _is_torchscript(member: str) -> bool:
    """`<root>/code/...py` (with `constants.pkl` beside): a torch.jit archive."""
    parts = member.split("/")
    return len(parts) >= 3 and parts[1] == "code" and member.endswith(".py")


def _is_torch_storage(member: str, roots: set[str]) -> bool:
    for root in roots:
        rest = member[len(root):] if member.startswith(root) else None
        if rest is not None and rest.startswith(TORCH_STORAGE_DIRS):
            leaf = rest.split("/", 1)[1]
            if leaf.isdigit() or rest.startswith(".data/"):
                return True
        if rest in ("version", "byteorder", ".format_version", ".storage_alignment"):
            return True
    return False


def _decompressor(kind: str, stream: IO[bytes]) -> IO[bytes]:
    if kind == "gzip":
        return cast(IO[bytes], gzip.GzipFile(fileobj=stream))
    if kind == "bzip2":
        return cast(IO[bytes], bz2.BZ2File(stream))
    if kind == "xz":
        return cast(IO[bytes], lzma.LZMAFile(stream))
    if kind == "zlib":
        return cast(IO[bytes], _ZlibReader(stream))
    return cast(IO[bytes], zstandard.ZstdDecompressor().stream_reader(stream))


class _Slice(io.RawIOBase):
    """`length` bytes of `stream` from `start`, as a seekable file of their own."""

    def __init__(self, stream: IO[bytes], start: int, length: int) -> None:
        self.stream, self.start, self.length, self.at = stream, start, length, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.at

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self.at, io.SEEK_END: self.length}[whence]
        self.at = max(0, base + offset)
        return self.at

    def readinto(self, buffer: Any) -> int:
        n = max(0, min(len(buffer), self.length - self.at))
        if not n:
            return 0
        self.stream.seek(self.start + self.at)
        data = self.stream.read(n)
        buffer[:len(data)] = data
        self.at += len(data)
        return len(data)


class _ZlibReader(io.RawIOBase):
    """A zlib stream (joblib's `.z`) read forward."""

    def __init__(self, stream: IO[bytes]) -> None:
        self.stream = stream
        self.z = zlib.decompressobj()

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        while True:
            if self.z.unconsumed_tail:
                data = self.z.decompress(self.z.unconsumed_tail, len(buffer))
            else:
                chunk = self.stream.read(1 << 20)
                if not chunk:
                    data = self.z.flush()
                    if not data:
                        return 0
                else:
                    data = self.z.decompress(chunk, len(buffer))
            if data:
                buffer[:len(data)] = data
                return len(data)


def _spooled(source: IO[bytes], directory: str | None) -> tempfile.SpooledTemporaryFile[bytes]:
    """A seekable copy of a stream that can only be read forward (gzip)."""
    copy: tempfile.SpooledTemporaryFile[bytes] = tempfile.SpooledTemporaryFile(  # noqa: SIM115
        max_size=SPOOL_IN_MEMORY, dir=directory)
    shutil.copyfileobj(source, copy, 1 << 20)
    copy.seek(0)
    return copy


def analyze_bytes(data: bytes, name: str, allow: Allowlist | None = None) -> list[Finding]:
    return Analyzer(allow or Allowlist()).analyze(io.BytesIO(data), name)
