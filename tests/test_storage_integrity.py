"""CRC64 as COS reports it (x-cos-hash-crc64ecma)."""

from __future__ import annotations

import os
from pathlib import Path

from recorder.storage.integrity import crc64, file_crc64


def test_the_published_check_value() -> None:
    # CRC-64/XZ (ECMA-182 polynomial, reflected, all-ones xor) of "123456789".
    assert crc64(b"123456789") == 0x995DC9BBDF1939FA
    assert crc64(b"") == 0


def test_a_file_is_checked_in_pieces_with_the_same_result(tmp_path: Path) -> None:
    data = os.urandom(9 * 1024 * 1024 + 3)  # more than two 4 MiB reads, not a multiple
    path = tmp_path / "f.bin"
    path.write_bytes(data)
    assert file_crc64(path) == crc64(data)
    assert crc64(data[1000:], crc64(data[:1000])) == crc64(data)
    assert file_crc64(path) != crc64(data[:-1])
