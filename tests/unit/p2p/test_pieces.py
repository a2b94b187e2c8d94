from __future__ import annotations

from stablemirror.p2p.pieces import piece_size

KiB, MiB, GiB = 1 << 10, 1 << 20, 1 << 30
LOW, HIGH = 256 * KiB, 16 * MiB


def test_about_500_pieces_as_a_power_of_two() -> None:
    size = piece_size(256 * MiB, LOW, HIGH)
    assert size == 512 * KiB
    assert 256 <= (256 * MiB) // size <= 1000


def test_clamped_to_the_bounds() -> None:
    assert piece_size(16 * MiB, LOW, HIGH) == LOW
    assert piece_size(0, LOW, HIGH) == LOW
    assert piece_size(64 * GiB, LOW, HIGH) == HIGH


def test_every_size_is_a_power_of_two_within_bounds() -> None:
    for size in (1, 1000, 7 * MiB + 3, 300 * MiB, 5 * GiB + 1):
        p = piece_size(size, LOW, HIGH)
        assert p & (p - 1) == 0 and LOW <= p <= HIGH

