"""Artifact digests (shipledger/digests.py): a file is the sha256 of its bytes; a directory is the
sha256 of its v2 manifest, which records every entry or refuses. No devnet needed.

Unreadable entries are tested as another user: root reads everything, so as root the digest is
computed in a forked child that has become nobody."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import stat
import tempfile
from pathlib import Path
from urllib.parse import unquote_to_bytes

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shipledger.digests import directory_manifest, digest_path, escape_name
from shipledger.errors import UsageError
from support import fails, run

HEADER = b"shipledger-manifest v2\n"
NOBODY = 65534


def h(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def write(root: Path, rel: str | bytes, content: bytes = b"", mode: int = 0o644) -> Path:
    path = Path(os.fsdecode(os.path.join(os.fsencode(root), os.fsencode(rel))))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    path.chmod(mode)
    return path


def v1_digest(files: dict[str, bytes]) -> str:
    """The v1 directory digest (no header, no escaping, files only), to show that a pair collided."""
    lines = [f"{h(content)} - {name}\n" for name, content in files.items()]
    return "sha256:" + h("".join(sorted(lines, key=lambda line: line.split(" ", 2)[2])).encode())


# ============================================================================ files: unchanged


def test_file_digest_is_sha256_of_its_bytes(tmp_path):
    path = write(tmp_path, "artifact.tar", b"release bytes\n" * 1000)
    assert digest_path(path) == "sha256:" + h(b"release bytes\n" * 1000)
    assert digest_path(write(tmp_path, "empty")) == "sha256:" + h(b"")


# ============================================================================ the manifest


def test_known_answer_for_a_tiny_tree(tmp_path):
    hello, script = b"hello\n", b"#!/bin/sh\n"
    write(tmp_path, "a.txt", hello)
    write(tmp_path, "bin/run", script, 0o750)
    write(tmp_path, "my file", b"")
    (tmp_path / "empty").mkdir()
    (tmp_path / "link").symlink_to("a.txt")
    expected = (
        "shipledger-manifest v2\n"
        f"f {h(hello)} a.txt\n"
        "d - bin\n"
        f"x {h(script)} bin/run\n"
        "d - empty\n"
        "l a.txt link\n"
        f"f {h(b'')} my%20file\n"
    ).encode()
    assert directory_manifest(tmp_path) == expected
    assert digest_path(tmp_path) == "sha256:" + h(expected)


def test_first_line_names_the_format_version(tmp_path):
    write(tmp_path, "x", b"1")
    assert directory_manifest(tmp_path).startswith(HEADER)
    (tmp_path / "nothing").mkdir()
    assert directory_manifest(tmp_path / "nothing") == HEADER


def test_empty_directory_differs_from_empty_file(tmp_path):
    (tmp_path / "dir").mkdir()
    empty_file = write(tmp_path, "file")
    assert v1_digest({}) == digest_path(empty_file)  # the v1 collision
    assert digest_path(tmp_path / "dir") == "sha256:" + h(HEADER) != digest_path(empty_file)


def test_empty_subdirectories_are_recorded(tmp_path):
    bare, nested = tmp_path / "bare", tmp_path / "nested"
    write(bare, "f", b"x")
    write(nested, "f", b"x")
    (nested / "logs" / "old").mkdir(parents=True)
    assert directory_manifest(nested) == HEADER + f"f {h(b'x')} f\nd - logs\nd - logs/old\n".encode()
    assert digest_path(bare) != digest_path(nested)


def test_digest_ignores_creation_order_times_and_owners(tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    names = ["b/2", "a", "b/1", "c/d/e"]
    for root, order, when in ((one, names, 1_000_000), (two, names[::-1], 2_000_000)):
        for name in order:
            os.utime(write(root, name, name.encode()), (when, when))
    if os.geteuid() == 0:
        os.chown(two / "a", 1234, 1234)
    assert digest_path(one) == digest_path(two)


def test_executable_is_any_execute_bit(tmp_path):
    for mode, kind in ((0o644, "f"), (0o744, "x"), (0o654, "x"), (0o645, "x"), (0o600, "f")):
        root = tmp_path / f"m{mode:o}"
        write(root, "tool", b"t", mode)
        assert directory_manifest(root) == HEADER + f"{kind} {h(b't')} tool\n".encode(), oct(mode)


# ============================================================================ symlinks: by target, never followed


def test_symlink_to_directory_is_an_l_line_and_not_followed(tmp_path):
    write(tmp_path, "real/f", b"data")
    (tmp_path / "alias").symlink_to("real")
    manifest = directory_manifest(tmp_path)
    assert manifest == HEADER + f"l real alias\nd - real\nf {h(b'data')} real/f\n".encode()
    before = digest_path(tmp_path)
    (tmp_path / "alias").unlink()
    assert digest_path(tmp_path) != before  # v1 left the link out, so removing it changed nothing
    (tmp_path / "alias").symlink_to("real/")
    assert digest_path(tmp_path) != before  # the target's text counts, not what it resolves to


def test_dangling_and_absolute_symlinks_are_recorded_by_target(tmp_path):
    (tmp_path / "dangling").symlink_to("no/such file")
    (tmp_path / "abs").symlink_to("/etc/hostname")
    assert directory_manifest(tmp_path) == HEADER + b"l /etc/hostname abs\nl no/such%20file dangling\n"


def test_symlink_loop_is_recorded_not_followed(tmp_path):
    (tmp_path / "loop").symlink_to(".")
    assert directory_manifest(tmp_path) == HEADER + b"l . loop\n"


def test_a_symlink_named_as_the_artifact_is_followed(tmp_path):
    write(tmp_path, "tree/f", b"1")
    (tmp_path / "current").symlink_to("tree")
    assert digest_path(tmp_path / "current") == digest_path(tmp_path / "tree")


# ============================================================================ names: bytes, escaped


def test_non_utf8_name_is_represented(tmp_path):
    latin1, utf8 = tmp_path / "latin1", tmp_path / "utf8"
    write(latin1, b"caf\xe9", b"x")
    write(utf8, "café", b"x")
    assert directory_manifest(latin1) == HEADER + f"f {h(b'x')} caf%E9\n".encode()
    assert directory_manifest(utf8) == HEADER + f"f {h(b'x')} caf%C3%A9\n".encode()


def test_newline_in_a_name_cannot_forge_a_line(tmp_path):
    # v1: one file named "a\n<sha256 of b's content> - b" gave the same manifest as two files a and b
    forged, honest = tmp_path / "forged", tmp_path / "honest"
    fake_name = f"a\n{h(b'B')} - b"
    write(forged, fake_name, b"A")
    write(honest, "a", b"A")
    write(honest, "b", b"B")
    assert v1_digest({fake_name: b"A"}) == v1_digest({"a": b"A", "b": b"B"})  # the v1 collision
    assert directory_manifest(forged) == HEADER + f"f {h(b'A')} a%0A{h(b'B')}%20-%20b\n".encode()
    assert digest_path(forged) != digest_path(honest)


def test_escape_character_and_space_do_not_collide(tmp_path):
    space, percent = tmp_path / "space", tmp_path / "percent"
    write(space, "a b")
    write(percent, "a%20b")
    assert directory_manifest(percent) == HEADER + f"f {h(b'')} a%2520b\n".encode()
    assert digest_path(space) != digest_path(percent)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=64))
def test_escape_is_reversible_and_one_field_of_printable_ascii(name):
    escaped = escape_name(name)
    assert all(0x21 <= ord(c) <= 0x7E for c in escaped)
    assert unquote_to_bytes(escaped) == name


# ============================================================================ refused, never skipped


def test_fifo_is_refused_naming_it(tmp_path):
    write(tmp_path, "f", b"x")
    (tmp_path / "sub").mkdir()
    os.mkfifo(tmp_path / "sub" / "pipe")
    with pytest.raises(UsageError, match=r"/sub/pipe is a FIFO"):
        digest_path(tmp_path)
    with pytest.raises(UsageError, match=r"pipe is neither a regular file nor a directory"):
        digest_path(tmp_path / "sub" / "pipe")


def test_socket_is_refused_naming_it(tmp_path):
    with socket.socket(socket.AF_UNIX) as server:
        server.bind(str(tmp_path / "sock"))
        with pytest.raises(UsageError, match=r"/sock is a socket"):
            digest_path(tmp_path)


def test_device_is_refused_naming_it(tmp_path):
    try:
        os.mknod(tmp_path / "null", stat.S_IFCHR | 0o600, os.makedev(1, 3))
    except PermissionError:
        pytest.skip("mknod is not permitted here (no CAP_MKNOD)")
    with pytest.raises(UsageError, match=r"/null is a character device"):
        digest_path(tmp_path)


def test_cli_refuses_a_fifo_with_exit_2(tmp_path):
    os.mkfifo(tmp_path / "pipe")
    # the gate hashes the artifact before it needs a chain, so no devnet is involved
    result = run(["gate", tmp_path, "--service", "s", "--env", "prod", "--deployment", tmp_path / "none.json"], cwd=tmp_path)
    fails(result, 2, "pipe is a FIFO")


@pytest.fixture
def shared_dir():
    """A directory that nobody (uid 65534) can reach; pytest's tmp_path is private to root."""
    path = Path(tempfile.mkdtemp(prefix="shipledger-digests-"))
    path.chmod(0o755)
    yield path
    for dirpath, dirnames, _ in os.walk(path):  # give back what the test took away, so cleanup works unprivileged
        for name in dirnames:
            os.chmod(os.path.join(dirpath, name), 0o755)
    shutil.rmtree(path)


def digest_as_other_user(path: Path) -> dict:
    """{"digest": ...} or {"error": ...} from digest_path(path) in a forked child that, when we are
    root, first becomes nobody (no exec: the interpreter may sit where nobody cannot reach it)."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child must end in os._exit whatever happens, or it would go on running pytest
        answer = {"crash": "the child stopped early"}
        try:
            os.close(read_end)
            if os.geteuid() == 0:
                os.setgroups([])
                os.setgid(NOBODY)
                os.setuid(NOBODY)
            try:
                answer = {"digest": digest_path(path)}
            except UsageError as exc:
                answer = {"error": str(exc)}
            answer["uid"] = os.geteuid()
        except Exception as exc:  # noqa: BLE001 - reported to the parent, which fails the test
            answer = {"crash": repr(exc)}
        finally:
            try:
                os.write(write_end, json.dumps(answer).encode())
            finally:
                os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        answer = json.loads(pipe.read())
    os.waitpid(pid, 0)
    assert "crash" not in answer and answer.pop("uid") != 0, answer
    return answer


def test_unreadable_subdirectory_is_refused_naming_it(shared_dir):
    write(shared_dir, "visible", b"x")
    write(shared_dir, "secret/key", b"k")
    readable = digest_as_other_user(shared_dir)
    assert "digest" in readable, readable  # the setup is readable by that user until we take it away
    (shared_dir / "secret").chmod(0o000)
    assert digest_as_other_user(shared_dir) == {"error": f"cannot list {shared_dir}/secret: permission denied"}
    assert digest_as_other_user(shared_dir / "secret" / "key") == {
        "error": f"cannot read {shared_dir}/secret/key: permission denied"}


def test_unreadable_file_is_refused_naming_it(shared_dir):
    write(shared_dir, "visible", b"x")
    write(shared_dir, "sub/secret", b"k", 0o000)
    assert digest_as_other_user(shared_dir) == {"error": f"cannot read {shared_dir}/sub/secret: permission denied"}
    assert digest_as_other_user(shared_dir / "sub" / "secret") == {
        "error": f"cannot read {shared_dir}/sub/secret: permission denied"}


@pytest.mark.skipif(os.geteuid() != 0, reason="needs a file owned by another user, which only root can make")
def test_two_users_get_the_same_digest(shared_dir):
    # v1 asked os.access whether *this* user may execute, so nobody saw "-" where root saw "x"
    write(shared_dir, "tool", b"#!/bin/sh\n", 0o744)
    write(shared_dir, "lib/data", b"d", 0o640)
    os.chown(shared_dir / "lib" / "data", 0, NOBODY)
    assert digest_as_other_user(shared_dir) == {"digest": digest_path(shared_dir)}
