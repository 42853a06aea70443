"""Checks on an LMDB data file made before liblmdb is allowed to map it.

liblmdb maps ``data.mdb`` into memory and trusts it.  A file that was cut
short (a failed copy, a full disk during a restore) makes liblmdb touch pages
past the end of the file, and the process dies with SIGBUS instead of raising
an exception.  Reading the two meta pages with ordinary file I/O first costs
two small reads and turns that crash into a StoreError an operator can act on.
"""

from __future__ import annotations

import os
import stat
import struct
from pathlib import Path

import lmdb.verify

from acd.store.errors import StoreError

_MAGIC = 0xBEEFC0DE
# LMDB 0.9 (the engine py-lmdb uses by default) writes data version 1 with a
# 16-byte page header on 64-bit hosts; the meta record follows that header.
_DATA_VERSION = 1
_PAGE_HEADER_BYTES = 16
# Offsets inside MDB_meta: magic, version, address, mapsize, two MDB_db of 48
# bytes (the first one's md_pad holds the page size), last page, txnid.
_META = struct.Struct("=IIQQ")
_DB_BYTES = 48
_META_TAIL = struct.Struct("=QQ")
_META_BYTES = _META.size + 2 * _DB_BYTES + _META_TAIL.size
_PSIZE = struct.Struct("=I")


class _Meta:
    """The fields of one meta page that the checks need."""

    def __init__(self, raw: bytes) -> None:
        base = _PAGE_HEADER_BYTES
        self.magic, self.version, _address, self.map_size_bytes = _META.unpack_from(raw, base)
        (self.page_size_bytes,) = _PSIZE.unpack_from(raw, base + _META.size)
        self.last_page, self.txnid = _META_TAIL.unpack_from(raw, base + _META.size + 2 * _DB_BYTES)


def check_data_file(directory: Path) -> int | None:
    """Refuse a data file liblmdb cannot open safely.

    Returns the map size recorded by the last commit (so a reopened store
    starts with the map it had grown to), or None when there is no data file
    yet and liblmdb will create one.
    """
    path = directory / "data.mdb"
    try:
        info = os.stat(path)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise StoreError(f"cannot inspect the data file {path}: {exc}") from exc
    if not stat.S_ISREG(info.st_mode):
        raise StoreError(f"{path} is not a regular file, so this is not a store directory")
    size_bytes = info.st_size
    if size_bytes == 0:
        # liblmdb would silently treat an empty file as a new store.  An empty
        # file is either a truncated store or a first start that crashed before
        # writing anything; only the operator can tell which.
        raise StoreError(
            f"the data file {path} is empty: it was truncated, or the very first start of this "
            f"node crashed before it wrote anything; if this node never held data, delete the "
            f"directory {directory} and start again, otherwise restore it from a backup"
        )
    try:
        with open(path, "rb") as f:
            first = f.read(_PAGE_HEADER_BYTES + _META_BYTES)
            if len(first) < _PAGE_HEADER_BYTES + _META_BYTES:
                raise StoreError(
                    f"the data file {path} is only {size_bytes} bytes, too short to be an LMDB "
                    f"data file; it was truncated or is not a store"
                )
            meta0 = _Meta(first)
            if meta0.magic != _MAGIC:
                raise StoreError(
                    f"{path} is not an LMDB data file (bad magic number {meta0.magic:#010x}); "
                    f"this directory does not hold a store"
                )
            if meta0.version != _DATA_VERSION:
                raise StoreError(
                    f"{path} uses LMDB data format version {meta0.version}, but this build reads "
                    f"version {_DATA_VERSION}"
                )
            page_bytes = meta0.page_size_bytes
            if page_bytes < 512 or page_bytes & (page_bytes - 1) or page_bytes > 65536:
                raise StoreError(
                    f"{path} records an impossible page size of {page_bytes} bytes; it is damaged"
                )
            if size_bytes < 2 * page_bytes:
                raise StoreError(
                    f"the data file {path} is truncated: {size_bytes} bytes cannot even hold the two "
                    f"{page_bytes}-byte meta pages; restore it from a backup"
                )
            f.seek(page_bytes)
            meta1 = _Meta(f.read(_PAGE_HEADER_BYTES + _META_BYTES))
    except OSError as exc:
        raise StoreError(f"cannot read the data file {path}: {exc}") from exc
    if meta1.magic != _MAGIC or meta1.version != _DATA_VERSION:
        raise StoreError(f"the second meta page of {path} is damaged; restore it from a backup")
    # liblmdb uses the meta page with the higher transaction id.
    meta = meta1 if meta1.txnid > meta0.txnid else meta0
    needed_bytes = (meta.last_page + 1) * page_bytes
    if size_bytes < needed_bytes:
        # LMDB's format lets the last pages of the file be free and never
        # written, so a short file is only proof of damage when a page that is
        # in use lies past its end.  The structural verifier reads the file
        # with ordinary I/O and answers exactly that; it runs only on this
        # suspicious path because it walks every page.
        try:
            problems: list[str] = lmdb.verify.verify(str(directory), subdir=True)  # type: ignore[no-untyped-call]
        except lmdb.verify.VerifyError as exc:
            problems = [str(exc)]
        if problems:
            raise StoreError(
                f"the data file {path} is truncated: it is {size_bytes} bytes but its last commit "
                f"uses {needed_bytes} bytes ({len(problems)} problem(s), first: {problems[0]}); "
                f"restore it from a backup or from another node"
            )
    return int(meta.map_size_bytes)
