"""Write a stand-in ``bcryptprimitives.dll`` for Wine builds that lack it (Debian 12: Wine 8).

Binary wheels built with Rust >= 1.78 (pydantic-core, which the ``mcp`` SDK needs)
import ``ProcessPrng`` from ``bcryptprimitives.dll``, which Wine only ships from
version 9. This writes a DLL with no code at all: its one export is a *forwarder*
to ``advapi32.SystemFunction036`` (RtlGenRandom), which Wine 8 has and which fills
a buffer with random bytes the same way. Real Windows (8.1 and later) has the
genuine DLL; this file is only for the Wine test environment.

Usage: python wine_bcryptprimitives.py OUT.dll
"""

from __future__ import annotations

import struct
import sys

DLL_NAME = b"bcryptprimitives.dll\0"
EXPORT = b"ProcessPrng\0"
TARGET = b"advapi32.SystemFunction036\0"
SECTION_RVA = 0x1000
FILE_ALIGN = 0x200


def export_section() -> bytes:
    """IMAGE_EXPORT_DIRECTORY, the three tables and the strings, at SECTION_RVA."""
    directory_size = 40
    eat = SECTION_RVA + directory_size  # AddressOfFunctions: 1 entry
    names = eat + 4  # AddressOfNames: 1 entry
    ordinals = names + 4  # AddressOfNameOrdinals: 1 entry (2 bytes)
    dll_name = ordinals + 2
    export_name = dll_name + len(DLL_NAME)
    target = export_name + len(EXPORT)
    directory = struct.pack(
        "<IIHHIIIIIII", 0, 0, 0, 0, dll_name, 1, 1, 1, eat, names, ordinals
    )
    body = (
        directory
        + struct.pack("<I", target)  # an RVA inside the export directory = a forwarder
        + struct.pack("<I", export_name)
        + struct.pack("<H", 0)
        + DLL_NAME
        + EXPORT
        + TARGET
    )
    return body


def build() -> bytes:
    section = export_section()
    raw_size = (len(section) + FILE_ALIGN - 1) // FILE_ALIGN * FILE_ALIGN
    dos = b"MZ" + b"\0" * 58 + struct.pack("<I", 0x40)
    coff = struct.pack("<HHIIIHH", 0x8664, 1, 0, 0, 0, 240, 0x2022)
    data_dirs = [(SECTION_RVA, len(section))] + [(0, 0)] * 15
    optional = struct.pack(
        "<HBBIIIII",
        0x20B,  # PE32+
        14,
        0,
        0,  # SizeOfCode
        raw_size,  # SizeOfInitializedData
        0,
        0,  # AddressOfEntryPoint: none (a DLL may have none)
        SECTION_RVA,
    ) + struct.pack(
        "<QIIHHHHHHIIIIHHQQQQII",
        0x180000000,  # ImageBase
        0x1000,  # SectionAlignment
        FILE_ALIGN,
        6,
        0,
        0,
        0,
        6,
        0,
        0,
        SECTION_RVA + 0x1000,  # SizeOfImage
        FILE_ALIGN,  # SizeOfHeaders
        0,
        3,  # IMAGE_SUBSYSTEM_WINDOWS_CUI
        0x0160,  # HIGH_ENTROPY_VA | DYNAMIC_BASE | NX_COMPAT
        0x100000,
        0x1000,
        0x100000,
        0x1000,
        0,
        16,
    )
    optional += b"".join(struct.pack("<II", rva, size) for rva, size in data_dirs)
    assert len(optional) == 240
    section_header = struct.pack(
        "<8sIIIIIIHHI",
        b".edata",
        len(section),
        SECTION_RVA,
        raw_size,
        FILE_ALIGN,  # PointerToRawData
        0,
        0,
        0,
        0,
        0x40000040,  # INITIALIZED_DATA | MEM_READ
    )
    headers = dos + b"PE\0\0" + coff + optional + section_header
    headers += b"\0" * (FILE_ALIGN - len(headers))
    return headers + section + b"\0" * (raw_size - len(section))


if __name__ == "__main__":
    with open(sys.argv[1], "wb") as f:
        f.write(build())
