"""Artifact digests: sha256 of a file, or of a directory's versioned manifest (see directory_manifest)."""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

from shipledger.errors import UsageError, path_error

MANIFEST_HEADER = "shipledger-manifest v2\n"  # v1 had no header line; its digests are not comparable

# A name byte stays as it is only if it is printable ASCII other than "%" (the escape) and space
# (the field separator); everything else, newlines and non-UTF-8 bytes included, becomes %XX.
# So every manifest line is exactly three space-separated fields, and the manifest is ASCII.
_ESCAPED = [chr(b) if 0x21 <= b <= 0x7E and b != 0x25 else f"%{b:02X}" for b in range(256)]

_SPECIAL = {stat.S_IFIFO: "a FIFO", stat.S_IFSOCK: "a socket", stat.S_IFCHR: "a character device",
            stat.S_IFBLK: "a block device"}


def escape_name(name: bytes) -> str:
    return "".join(map(_ESCAPED.__getitem__, name))


def file_sha256(path) -> str:
    # hashlib.file_digest reads in large blocks into OpenSSL: faster than sha256sum here (bench/)
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def directory_manifest(root: str | Path) -> bytes:
    """The header line MANIFEST_HEADER, then one line per entry below root (root itself has none),
    sorted by escaped path:

        f <sha256 of the bytes> <path>   regular file
        x <sha256 of the bytes> <path>   regular file with any execute bit (user, group or other)
        l <target> <path>                symlink, by its escaped target text; never followed
        d - <path>                       directory, so an empty one is recorded too

    Paths are relative to root, "/"-separated, built from the names' bytes (os.fsencode) and escaped
    with escape_name; hidden files count like any other. Timestamps, owners and the other mode bits
    are left out. A FIFO, socket or device, or anything that cannot be read, raises UsageError
    naming it: a digest that skipped it would claim content it never saw."""
    entries = []  # (escaped path, line)
    pending = [(os.fsencode(root), "")]  # directories still to list, with their escaped path + "/"
    while pending:
        directory, prefix = pending.pop()
        try:
            with os.scandir(directory) as listing:
                children = list(listing)
        except OSError as exc:
            raise path_error(os.fsdecode(directory), exc, "list") from None
        for child in children:
            path = prefix + escape_name(child.name)
            try:
                if child.is_symlink():
                    line = f"l {escape_name(os.readlink(child.path))} {path}\n"
                elif child.is_dir(follow_symlinks=False):
                    line = f"d - {path}\n"
                    pending.append((child.path, path + "/"))
                else:
                    mode = child.stat(follow_symlinks=False).st_mode
                    if not stat.S_ISREG(mode):
                        what = _SPECIAL.get(stat.S_IFMT(mode), "a special file")
                        raise UsageError(f"{os.fsdecode(child.path)} is {what}: a directory digest records"
                                         " only files, directories and symlinks")
                    line = f"{'x' if mode & 0o111 else 'f'} {file_sha256(child.path)} {path}\n"
            except OSError as exc:
                raise path_error(os.fsdecode(child.path), exc) from None
            entries.append((path, line))
    entries.sort()
    return (MANIFEST_HEADER + "".join(line for _, line in entries)).encode("ascii")


def digest_path(path: str | Path) -> str:
    """'sha256:<hex>' of a file (its bytes) or directory (its manifest). A symlink named here is followed."""
    path = Path(path)
    try:
        if path.is_file():
            return "sha256:" + file_sha256(path)
        is_dir, exists = path.is_dir(), path.exists()
    except OSError as exc:  # an unreadable file, or a directory on the way that we may not enter
        raise path_error(exc.filename or path, exc) from None
    if is_dir:
        return "sha256:" + hashlib.sha256(directory_manifest(path)).hexdigest()
    if exists:
        raise UsageError(f"{path} is neither a regular file nor a directory")
    raise UsageError(f"{path} does not exist (name an artifact by a path or by --digest sha256:<hex>)")
