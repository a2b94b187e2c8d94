from __future__ import annotations

import pytest

from stablemirror.models.classify import Selection, classify, is_excluded
from stablemirror.models.modelfile import ModelfileError, parse_modelfile


@pytest.mark.parametrize(("path", "kind"), [
    ("model.safetensors", "weight"), ("sub/pytorch_model.bin", "weight"),
    ("m.gguf", "weight"), ("config.json", "weight.config"),
    ("tokenizer.json", "weight.config"), ("vocab.txt", "weight.config"),
    ("tokenizer.model", "weight.config"), ("README.md", "doc"), ("LICENSE", "doc"),
    ("notes.txt", "doc"), ("train.py", "code"), ("data/train.parquet", "dataset"),
    ("data/x.jsonl", "dataset")])
def test_default_kinds(path: str, kind: str) -> None:
    assert classify(path, 10, Selection()) == (kind, False)


def test_unknown_files_are_guessed_by_size_and_marked_untested() -> None:
    assert classify("blob.xyz", 20 << 20, Selection()) == ("weight", True)
    assert classify("blob.xyz", 100, Selection()) == ("weight.config", True)


def test_given_globs_win_over_names() -> None:
    sel = Selection({"dataset": ("*.json",), "doc": ("sub/*",)})
    assert classify("x/config.json", 1, sel) == ("dataset", False)
    assert classify("sub/model.safetensors", 1, sel) == ("doc", False)


def test_hidden_entries_and_exclude_globs_are_left_out() -> None:
    sel = Selection(exclude=("*.onnx",))
    assert is_excluded(".gitattributes", sel) and is_excluded(".cache/x/y", sel)
    assert is_excluded("sub/m.onnx", sel) and not is_excluded("m.safetensors", sel)


def test_modelfile_values_lists_and_globs() -> None:
    mf = parse_modelfile("# a model\nNAME tiny\nfamily llama\nLICENSE MIT\nLICENSE Apache-2.0"
                         "\nMODEL *.bin\nCONFIG extra/*.cfg\nEXCLUDE *.tmp\n\n")
    assert mf.values == {"name": "tiny", "family": "llama"}
    assert mf.lists == {"licenses": ["MIT", "Apache-2.0"]}
    assert mf.globs == {"weight": ["*.bin"], "weight.config": ["extra/*.cfg"]}
    assert mf.exclude == ["*.tmp"]


@pytest.mark.parametrize(("text", "says"), [("FOO bar", "unknown keyword"),
                                            ("NAME", "needs a value"),
                                            ("NAME a\nNAME b", "given twice")])
def test_modelfile_mistakes_name_the_line(text: str, says: str) -> None:
    with pytest.raises(ModelfileError, match=f"Modelfile:\\d+: .*{says}"):
        parse_modelfile(text)
