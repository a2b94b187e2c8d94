"""Repository patterns, written once (oci/patterns.py): two glob dialects and longest prefix."""

from __future__ import annotations

import pytest

from stablemirror.oci.patterns import fnmatch_match, glob_match, longest_prefix


@pytest.mark.parametrize(("pattern", "value", "iam", "fnmatch"), [
    ("models/*", "models/a/b", True, True),  # `*` crosses `/` in both
    ("models/?", "models/a", True, True),
    ("models/[ab]", "models/a", False, True),  # classes: fnmatch only
    ("models/[ab]", "models/[ab]", True, False),
    ("Models/*", "models/a", False, False),  # case counts
])
def test_the_two_glob_dialects(pattern: str, value: str, iam: bool, fnmatch: bool) -> None:
    assert glob_match(pattern, value) is iam
    assert fnmatch_match(pattern, value) is fnmatch


def test_iam_globs_may_ignore_case() -> None:
    assert glob_match("registry:PULL", "registry:pull", ignore_case=True)


def test_the_longest_prefix_wins_and_the_first_of_equals() -> None:
    items = [("", 0), ("docker.io/", 1), ("docker.io/library/", 2), ("docker.io/", 3)]
    assert longest_prefix("docker.io/library/x", items, lambda i: i[0]) == ("docker.io/library/", 2)
    assert longest_prefix("docker.io/x", items, lambda i: i[0]) == ("docker.io/", 1)
    assert longest_prefix("quay.io/x", items, lambda i: i[0]) == ("", 0)
    assert longest_prefix("quay.io/x", items[1:], lambda i: i[0]) is None
