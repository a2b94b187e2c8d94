"""Every malicious file of the corpus is found, no benign one is."""

from __future__ import annotations

import pytest

from stablemirror.scanning.analyze import analyze_bytes
from tests.support.scanning_corpus import benign_files, malicious_files

MALICIOUS = malicious_files()
BENIGN = benign_files()


@pytest.mark.parametrize("name", sorted(MALICIOUS))
def test_malicious_file_is_found(name: str) -> None:
    findings = analyze_bytes(MALICIOUS[name], name)
    assert findings, f"{name}: no finding"
    assert all(f.file.startswith(name) for f in findings)


@pytest.mark.parametrize("name", sorted(BENIGN))
def test_benign_file_passes(name: str) -> None:
    findings = analyze_bytes(BENIGN[name], name)
    assert findings == [], [f.describe() for f in findings]


def _expected_category(name: str) -> str:
    if name.endswith((".safetensors", ".gguf")) and not name.startswith("pickle_as"):
        return "malformed"
    return "unsafe_code"


@pytest.mark.parametrize("name", sorted(MALICIOUS))
def test_malicious_file_has_a_finding_of_its_category(name: str) -> None:
    categories = {f.category for f in analyze_bytes(MALICIOUS[name], name)}
    assert _expected_category(name) in categories


def test_a_tar_layer_may_carry_the_name_of_the_file_it_packs() -> None:
    from tests.support.scanning_corpus import malicious_pickle, safetensors, tar_of
    assert analyze_bytes(tar_of({"w/model.safetensors": safetensors()}),
                         "w/model.safetensors") == []
    found = analyze_bytes(tar_of({"w/model.safetensors": malicious_pickle()}),
                          "w/model.safetensors")
    assert {f.file for f in found} == {"w/model.safetensors!w/model.safetensors"}
    assert {f.kind for f in found} == {"global", "format_mismatch"}
