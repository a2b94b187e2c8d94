"""The pickle walker: what it reports, where, and what it lets through."""

from __future__ import annotations

import io

from stablemirror.scanning.allowlist import Allowlist
from stablemirror.scanning.analyze import analyze_bytes
from stablemirror.scanning.findings import Findings
from stablemirror.scanning.pickle_scan import scan_pickle_stream
from tests.support.scanning_corpus import malicious_pickles, sbu


def test_finding_names_module_name_and_offset() -> None:
    data = b"\x80\x02ccollections\nOrderedDict\n)R0cos\nsystem\n" + sbu("true") + b"\x85R."
    [finding] = analyze_bytes(data, "m.pkl")
    assert (finding.module, finding.name) == ("os", "system")
    assert finding.offset == data.index(b"cos")
    assert finding.file == "m.pkl"


def test_memo_overwrite_is_followed() -> None:
    [finding] = [f for f in analyze_bytes(malicious_pickles()["stack_global_memo"], "m.pkl")]
    assert (finding.module, finding.name) == ("os", "system")


def test_python2_names_are_mapped_like_the_unpickler() -> None:
    assert analyze_bytes(b"\x80\x02c__builtin__\nset\n]\x85R.", "a.pkl") == []
    [f] = analyze_bytes(b"\x80\x02c__builtin__\neval\nN\x85R.", "a.pkl")
    assert (f.module, f.name) == ("builtins", "eval")


def test_namespace_allowlist_extends_the_builtin_one() -> None:
    data = b"\x80\x02ctransformers.training_args\nTrainingArguments\n)R."
    assert analyze_bytes(data, "training_args.bin")
    allow = Allowlist(["transformers.training_args.TrainingArguments"])
    assert analyze_bytes(data, "training_args.bin", allow) == []
    whole = Allowlist(["transformers.training_args.*"])
    assert analyze_bytes(data, "training_args.bin", whole) == []
    # a whole-module entry does not reach attributes or private names
    assert analyze_bytes(b"\x80\x04" + sbu("transformers.training_args")
                         + sbu("TrainingArguments.__init__") + b"\x93.", "x.pkl", whole)


def test_large_payloads_are_skipped_not_read() -> None:
    size = 50 << 20
    data = b"\x80\x04\x8e" + size.to_bytes(8, "little") + b"\x00" * size + b"."

    class CountingReads(io.BytesIO):
        read_bytes = 0

        def read(self, n: int | None = -1) -> bytes:
            out = super().read(n)
            CountingReads.read_bytes += len(out)
            return out

    stream = CountingReads(data)
    out = Findings("big.pkl")
    consumed = scan_pickle_stream(stream, Allowlist(), out)
    assert out.items == [] and consumed == len(data)
    assert CountingReads.read_bytes < 4 << 20


def test_payload_past_the_end_is_a_finding() -> None:
    data = b"\x80\x04\x8e" + (1 << 40).to_bytes(8, "little") + b"\x00."
    [f] = analyze_bytes(data, "x.pkl")
    assert f.kind == "unanalyzable"
