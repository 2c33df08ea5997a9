"""CRC-64/ECMA-182 of a file, as COS reports it in x-cos-hash-crc64ecma."""

from __future__ import annotations

from pathlib import Path

import crcmod  # type: ignore[import-untyped]

# Reflected ECMA-182 polynomial, all-ones final xor: the "CRC-64/XZ" that COS uses.
_crc64 = crcmod.mkCrcFun(0x142F0E1EBA9EA3693, initCrc=0, xorOut=0xFFFFFFFFFFFFFFFF, rev=True)
_CHUNK = 4 * 1024 * 1024


def crc64(data: bytes, previous: int = 0) -> int:
    """`previous` continues a running CRC, so a file can be checked in pieces."""
    return int(_crc64(data, previous))


def file_crc64(path: Path) -> int:
    value = 0
    with path.open("rb") as file:
        while chunk := file.read(_CHUNK):
            value = crc64(chunk, value)
    return value
