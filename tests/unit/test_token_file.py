"""The alert receiver's token file (sigops.incident.intake.TokenFile): re-read when it changes,
several tokens at once, and a file empty or gone for a moment keeps the tokens it had."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from sigops.incident.intake import TokenFile, read_token


def test_rotation_by_rename_is_seen_at_once(tmp_path: Path) -> None:
    f = tmp_path / "token"
    f.write_text("old-token-aaaa\n")
    tf = TokenFile(str(f))
    assert tf.matches(b"old-token-aaaa") and not tf.matches(b"new-token-bbbb")
    new = tmp_path / "token.new"
    new.write_text("new-token-bbbb\n")
    os.replace(new, f)  # how kubelet swaps a Secret volume: a new file, atomically
    assert tf.matches(b"new-token-bbbb") and not tf.matches(b"old-token-aaaa")


def test_a_rewrite_that_keeps_the_stamp_is_seen_after_a_while(tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch
                                                              ) -> None:
    f = tmp_path / "token"
    f.write_text("token-one-1111")
    st = os.stat(f)
    tf = TokenFile(str(f))
    with open(f, "r+") as fh:  # in place, same size, same mtime: nothing in stat changes
        fh.write("token-two-2222")
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert tf.matches(b"token-one-1111")  # within REREAD_AFTER: the stamp says unchanged
    monkeypatch.setattr(TokenFile, "REREAD_AFTER", 0.0)
    assert tf.matches(b"token-two-2222") and not tf.matches(b"token-one-1111")


def test_several_tokens_and_a_bad_moment(tmp_path: Path) -> None:
    f = tmp_path / "token"
    f.write_text("first-token\n\n  second-token  \n")
    tf = TokenFile(str(f))
    assert tf.matches(b"first-token") and tf.matches(b"second-token")
    assert not tf.matches(b"") and not tf.matches(b"first-token second-token")
    f.write_text("")  # truncated before it is written: keep what we had
    assert tf.matches(b"first-token")
    f.unlink()  # gone for a moment
    assert tf.matches(b"second-token")
    f.write_text("third-token-longer\n")
    assert tf.matches(b"third-token-longer") and not tf.matches(b"first-token")


def test_start_up_errors(tmp_path: Path) -> None:
    assert read_token(None) is None
    with pytest.raises(OSError):
        read_token(str(tmp_path / "missing"))
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(ValueError):
        read_token(str(tmp_path / "empty"))


def test_the_same_class_serves_the_wal_reader_and_names_its_file(tmp_path: Path) -> None:
    """One TokenFile for the receiver, the WAL reader sidecar and the token sigops presents to
    it (sigops.settings.tokens); a client presents the first line."""
    from sigops.settings.tokens import TokenFile as Shared
    from sigops.settings.tokens import bearer

    assert Shared is TokenFile
    f = tmp_path / "wal-token"
    f.write_text("\n  new-token-1 \nold-token-2\n")
    tf = Shared(str(f), what="WAL reader token file")
    assert tf.first() == b"new-token-1" and tf.matches(b"old-token-2")
    (tmp_path / "empty").write_text("")
    with pytest.raises(ValueError, match="WAL reader token file"):
        Shared(str(tmp_path / "empty"), what="WAL reader token file")
    assert bearer("Bearer abc ") == b"abc"
    assert bearer(None) is bearer("") is bearer("Bearer ") is bearer("Basic abc") is None
