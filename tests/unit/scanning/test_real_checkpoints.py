"""The analyzers against files written by the real PyTorch and NumPy, not stand-ins.

The corpus in tests/support/scanning_corpus.py writes torch-like pickles through stand-in modules;
here torch.save and numpy write them, so an allowlist that missed a global the real
libraries emit (a new rebuild function, a dtype, numpy 2's `numpy._core`) would block a
benign checkpoint. torch 2.13.0 (CPU) and numpy are dev dependencies: a missing one fails
the import, loudly.
"""

from __future__ import annotations

import collections
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from stablemirror.scanning.analyze import analyze_bytes


def _module() -> torch.nn.Module:
    return torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU(), torch.nn.LayerNorm(3))


def _benign(tmp: Path) -> dict[str, Path]:
    files = {
        "tensors.pt": {"w": torch.randn(3, 4), "b": torch.zeros(4, dtype=torch.bfloat16),
                       "h": torch.ones(2, dtype=torch.float16), "i": torch.arange(5),
                       "q": torch.zeros(2, dtype=torch.int8), "m": torch.ones(2) > 0},
        "state_dict.bin": _module().state_dict(),
        "ordered.pth": collections.OrderedDict(a=torch.randn(2), step=7),
        "parameter.pt": torch.nn.Parameter(torch.randn(2)),
        "checkpoint.ckpt": {"model": _module().state_dict(), "epoch": 3,
                            "optimizer": torch.optim.SGD(_module().parameters(),
                                                         lr=0.1).state_dict()},
    }
    paths = {}
    for name, obj in files.items():
        paths[name] = tmp / name
        torch.save(obj, paths[name])
    paths["legacy.pt"] = tmp / "legacy.pt"
    torch.save({"w": torch.randn(3)}, paths["legacy.pt"], _use_new_zipfile_serialization=False)
    paths["array.npy"] = tmp / "array.npy"
    np.save(paths["array.npy"], np.arange(10.0))
    for protocol in range(pickle.HIGHEST_PROTOCOL + 1):
        p = tmp / f"numpy-p{protocol}.pkl"
        p.write_bytes(pickle.dumps({"x": np.arange(4, dtype=np.int32),
                                    "d": np.dtype("float32"), "s": np.float64(1.5)},
                                   protocol=protocol))
        paths[p.name] = p
    return paths


def test_benign_checkpoints_written_by_torch_and_numpy_pass(tmp_path: Path) -> None:
    for name, path in _benign(tmp_path).items():
        findings = analyze_bytes(path.read_bytes(), name)
        assert findings == [], (name, findings)


class _Payload:
    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, ("true",))


@pytest.mark.parametrize("name", ["evil.pt", "evil-legacy.pt"])
def test_torch_save_of_an_object_that_runs_code_is_found(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    torch.save({"w": torch.randn(2), "x": _Payload()}, path,
               _use_new_zipfile_serialization=name == "evil.pt")
    findings = analyze_bytes(path.read_bytes(), name)
    assert any("system" in str(f) for f in findings), findings


def test_a_whole_module_pickle_is_a_finding_as_torch_weights_only_refuses_it(
        tmp_path: Path) -> None:
    """Loading it imports and instantiates arbitrary classes: the allowlist covers weights,
    not code (the same line `torch.load(weights_only=True)` draws)."""
    path = tmp_path / "full-model.pt"
    torch.save(_module(), path)
    findings = analyze_bytes(path.read_bytes(), path.name)
    assert any("torch.nn.modules" in str(f) for f in findings), findings
