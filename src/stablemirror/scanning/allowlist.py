"""The globals a model checkpoint may import or call when unpickled.

Everything here rebuilds data: tensors and their storages, dtypes, NumPy arrays, plain
containers. Nothing here runs code named by the file, opens files, imports by name or looks
attributes up. A pickle naming anything else is a finding, so a bypass needs a hole in this
list, not a gap in a blocklist. Namespaces extend it with `scanning.policies[].allow_globals`
(`module.name`, or `module.*` for every name of one module), e.g. for training-argument
objects of a framework they trust. docs/scanning.md lists the rationale per entry.
"""

from __future__ import annotations

from collections.abc import Iterable

_TORCH_REBUILD = (
    "_rebuild_tensor", "_rebuild_tensor_v2", "_rebuild_tensor_v3", "_rebuild_parameter",
    "_rebuild_parameter_with_state", "_rebuild_qtensor", "_rebuild_sparse_tensor",
    "_rebuild_nested_tensor", "_rebuild_device_tensor_from_numpy",
    "_rebuild_meta_tensor_no_storage", "_rebuild_wrapper_subclass",
)
_STORAGE_KINDS = (
    "Double", "Float", "Half", "BFloat16", "Long", "Int", "Short", "Char", "Byte", "Bool",
    "ComplexFloat", "ComplexDouble", "QUInt8", "QInt8", "QInt32", "QUInt4x2", "QUInt2x4",
)
_TORCH_DTYPES = (
    "float32", "float", "float64", "double", "float16", "half", "bfloat16", "complex32",
    "complex64", "complex128", "cfloat", "cdouble", "chalf", "uint8", "uint16", "uint32",
    "uint64", "int8", "int16", "short", "int32", "int", "int64", "long", "bool", "qint8",
    "quint8", "qint32", "quint4x2", "quint2x4", "float8_e4m3fn", "float8_e5m2",
    "float8_e4m3fnuz", "float8_e5m2fnuz", "float8_e8m0fnu", "bits8", "bits16",
)
_TORCH_MISC = (
    "Size", "device", "Tensor", "UntypedStorage", "strided", "sparse_coo", "sparse_csr",
    "sparse_csc", "sparse_bsr", "sparse_bsc", "_mkldnn", "contiguous_format",
    "channels_last", "channels_last_3d", "preserve_format", "per_tensor_affine",
    "per_channel_affine", "per_tensor_symmetric", "per_channel_symmetric",
    "per_channel_affine_float_qparams",
)

BUILTIN_ALLOWED: frozenset[tuple[str, str]] = frozenset(
    [("torch._utils", n) for n in _TORCH_REBUILD]
    + [("torch", f"{k}Storage") for k in _STORAGE_KINDS]
    + [("torch.cuda", f"{k}Storage") for k in _STORAGE_KINDS]
    + [("torch", n) for n in _TORCH_DTYPES + _TORCH_MISC]
    + [("torch.storage", "UntypedStorage"), ("torch.storage", "TypedStorage"),
       ("torch._tensor", "_rebuild_from_type_v2"), ("torch.nn.parameter", "Parameter"),
       ("torch.serialization", "_get_layout"), ("torch.types", "Size")]
    + [(m, "_reconstruct") for m in ("numpy.core.multiarray", "numpy._core.multiarray")]
    + [(m, "scalar") for m in ("numpy.core.multiarray", "numpy._core.multiarray")]
    + [(m, "_frombuffer") for m in ("numpy.core.numeric", "numpy._core.numeric")]
    + [("numpy", "ndarray"), ("numpy", "dtype")]
    + [("collections", n) for n in ("OrderedDict", "defaultdict", "Counter", "deque")]
    + [("builtins", n) for n in ("set", "frozenset", "bytearray", "bytes", "slice",
                                 "complex", "range", "tuple", "list", "dict", "int",
                                 "float", "bool", "str")]
    # Protocol-2 pickles encode bytes as _codecs.encode(text, "latin1"); its result is
    # data, never a name the analyzer resolves (see pickle_scan: computed values).
    + [("_codecs", "encode")]
    + [("argparse", "Namespace")]
    + [("datetime", n) for n in ("datetime", "date", "time", "timedelta", "timezone")]
)
# Modules of which every name is data (NumPy 2's dtype classes).
BUILTIN_ALLOWED_MODULES: frozenset[str] = frozenset({"numpy.dtypes"})


class Allowlist:
    def __init__(self, extra: Iterable[str] = ()) -> None:
        pairs = set(BUILTIN_ALLOWED)
        modules = set(BUILTIN_ALLOWED_MODULES)
        for entry in extra:
            module, _, name = entry.rpartition(".")
            if not module or not name:
                raise ValueError(f"allow_globals entry {entry!r}: expected module.name")
            if name == "*":
                modules.add(module)
            else:
                pairs.add((module, name))
        self.pairs = frozenset(pairs)
        self.modules = frozenset(modules)

    def allows(self, module: str, name: str) -> bool:
        if (module, name) in self.pairs:
            return True
        # a whole-module entry covers plain names only: no attribute chains (a.b) off them
        return module in self.modules and "." not in name and not name.startswith("_")
