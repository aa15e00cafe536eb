"""Artifact digests: sha256 of a file, or of a directory hashed deterministically."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from shipledger.errors import UsageError, path_error

def file_sha256(path: Path) -> str:
    # hashlib.file_digest reads in large blocks into OpenSSL: faster than sha256sum here (bench/)
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def directory_manifest(root: Path) -> bytes:
    """One line per regular file, sorted by POSIX path relative to root:
    "<sha256 hex> <x|-> <path>\\n", x when the file is executable. Symlinks are recorded by target.
    The directory digest is the sha256 of this manifest, so it ignores timestamps and owners."""
    lines = []

    def unreadable(exc: OSError):  # os.walk skips what it cannot list; a digest must not
        raise exc

    for dirpath, dirnames, filenames in os.walk(root, onerror=unreadable):
        dirnames.sort()
        for name in filenames:
            full = Path(dirpath) / name
            rel = full.relative_to(root).as_posix()
            if full.is_symlink():
                lines.append(f"{hashlib.sha256(os.readlink(full).encode()).hexdigest()} l {rel}\n")
            elif full.is_file():
                mode = "x" if os.access(full, os.X_OK) else "-"
                lines.append(f"{file_sha256(full)} {mode} {rel}\n")
    return "".join(sorted(lines, key=lambda line: line.split(" ", 2)[2])).encode()


def digest_path(path: str | Path) -> str:
    """'sha256:<hex>' of a file or directory."""
    path = Path(path)
    try:
        if path.is_file():
            return "sha256:" + file_sha256(path)
        if path.is_dir():
            return "sha256:" + hashlib.sha256(directory_manifest(path)).hexdigest()
    except OSError as exc:
        raise path_error(exc.filename or path, exc) from None
    if path.exists():
        raise UsageError(f"{path} is neither a regular file nor a directory (a pipe or a device cannot be hashed)")
    raise UsageError(f"{path} does not exist (name an artifact by a path or by --digest sha256:<hex>)")
