"""A retired key stays retired (issue 26, item 2): the managed ring's rules, pure, and a
KeyRotation on the in-memory door with a key revoked mid-rotation. Each fails on the code
before: a retired or revoked key could be made accepted again."""

from __future__ import annotations

import pytest
from pcskit import signed
from tests.unit.test_rotation_safety import NS, World

from sigops.backend.deployment import Backend
from sigops.backend.keyring import OVERLAP_MARK, ManagedRing, RingError
from sigops.core.diagnose import Diagnoser
from sigops.core.keys import HMAC, Key, KeyRing

pytestmark = pytest.mark.unit
NOW = "2026-12-06T09:00:00Z"
LATER = "2026-12-20T09:00:00Z"
EARLIER = "2026-12-01T09:00:00Z"


def key(kid: str) -> Key:
    return Key(kid, HMAC, secret=f"secret-of-{kid}-0123456789".encode())


def ring(**states: str) -> ManagedRing:
    r = ManagedRing()
    for kid, state in states.items():
        r.entries.append({**key(kid).to_entry(), "state": state})
        if state in ("active", "retiring"):
            r.accepts.append(kid)
    r.primary = next((k for k, s in states.items() if s == "active"), None)
    return r


def fp(kid: str) -> str:
    return key(kid).fingerprint


def test_only_active_or_retiring_in_window_may_come_back() -> None:
    r = ring(new="active", old="retiring", gone="retired", bad="retiring", next="pending")
    r.entry("old")["overlap_until"] = LATER  # type: ignore[index]
    r.entry("gone")["retired_at"] = EARLIER  # type: ignore[index]
    r.revoke("bad", NOW, "alice")
    assert r.readmission_refused(fp("new"), NOW) is None
    assert r.readmission_refused(fp("old"), NOW) is None
    assert "retired at 2026-12-01" in (r.readmission_refused(fp("gone"), NOW) or "")
    why = r.readmission_refused(fp("bad"), NOW) or ""
    assert "revoked" in why and "alice" in why and NOW in why
    assert "pending" in (r.readmission_refused(fp("next"), NOW) or "")
    assert "not in sigops' key ring" in (r.readmission_refused(fp("stranger"), NOW) or "")
    # Past its window a retiring key may not come back either.
    assert "window is over" in (r.readmission_refused(fp("old"), "2026-12-21T00:00:00Z") or "")


def test_a_revoked_key_never_leaves_that_state_and_a_retired_one_only_for_revoked() -> None:
    r = ring(new="active", old="retiring")
    assert r.revoke("old", NOW, "alice", reason="leaked in a paste")
    assert "old" not in r.accepts
    for state in ("active", "retiring", "retired", "pending"):
        assert r.set_state("old", state) is False
        assert r.entry("old")["state"] == "revoked"  # type: ignore[index]
    r2 = ring(new="active", old="retired")
    assert r2.set_state("old", "retiring") is False and r2.entry("old")["state"] == "retired"  # type: ignore[index]
    assert r2.set_state("old", "revoked", NOW) and r2.entry("old")["revoked_at"] == NOW  # type: ignore[index]
    assert r.revoke("old", LATER, "bob") is False  # already: when and who stay the first
    assert r.entry("old")["revoked_by"] == "alice"  # type: ignore[index]


def test_the_primary_cannot_be_revoked_nor_an_unknown_key() -> None:
    r = ring(new="active")
    with pytest.raises(RingError, match="primary"):
        r.revoke("new", NOW, "alice")
    with pytest.raises(RingError, match="no key"):
        r.revoke("nope", NOW, "alice")


def test_the_backend_is_never_given_a_retired_or_revoked_key() -> None:
    r = ring(new="active", old="retiring", gone="retired")
    r.accepts.append("gone")  # as an old scenario A or a hand edit left it
    r.revoke("old", NOW, "alice")
    r.accepts.append("old")
    data = r.secret_data(HMAC)
    assert data["PCS_HMAC_KEYS"] == key("new").secret.decode()  # type: ignore[union-attr]


def test_overlaps_kept_by_a_rotation_never_include_a_retired_or_revoked_key() -> None:
    r = ring(new="active", a="retiring", b="retiring", c="retiring")
    for kid in ("a", "b", "c"):
        r.entry(kid).update(added_by=OVERLAP_MARK, overlap_until=LATER)  # type: ignore[union-attr]
    r.set_state("b", "retired", NOW)
    r.accepts.append("b")
    r.revoke("c", NOW, "alice")
    r.accepts.append("c")
    assert r.with_overlaps(["new", "c"], NOW) == ["new", "a"]


def test_a_restored_snapshot_keeps_revocations_made_since() -> None:
    snap = ring(old="active", other="retiring")
    now = ring(old="retiring", other="retiring", new="active")
    now.revoke("other", NOW, "alice")
    snap.keep_closed_from(now)
    assert snap.entry("other")["state"] == "revoked" and "other" not in snap.accepts  # type: ignore[index]


def test_a_revoked_key_signs_nothing_valid_whatever_the_backend_accepts() -> None:
    k = key("bad").with_state("revoked")
    kr = KeyRing((k, key("new")), backend_accepts=frozenset({"bad", "new"}))
    assert not kr.accepts(k)
    v = Diagnoser(kr).classify_obj(signed(k), 0)
    assert not v.valid and v.cause == "stale_key" and v.kid == "bad"


# -- a rotation with a key revoked on the way ---------------------------------------------------


def _revoke_in_cluster(w: World, kid: str) -> None:
    b = Backend(w.kube, NS, "fractal-lba-backend", None)
    r, existing = b.read_ring()
    assert r is not None
    r.revoke(kid, NOW, "alice")
    b.write_ring(r, HMAC, existing)


def test_a_key_revoked_mid_rotation_is_never_accepted_again_by_it() -> None:
    w = World(HMAC)
    w.run(until=frozenset({"Promoted"}))
    old_kid = w.obj()["status"]["previousKeyId"]
    _revoke_in_cluster(w, old_kid)
    assert w.run() == "Completed"
    r, _ = Backend(w.kube, NS, "fractal-lba-backend", None).read_ring()
    assert r is not None and r.entry(old_kid)["state"] == "revoked"  # type: ignore[index]
    assert w.old.fingerprint not in w.backend_fingerprints()


def test_an_abort_after_a_revocation_does_not_restore_the_revoked_key() -> None:
    w = World(HMAC)
    w.run(until=frozenset({"Promoted"}))
    old_kid = w.obj()["status"]["previousKeyId"]
    _revoke_in_cluster(w, old_kid)
    w.kube.crs[(NS, "keyrotations", "rot")]["spec"]["abort"] = True
    assert w.tick() == "Aborted"
    r, _ = Backend(w.kube, NS, "fractal-lba-backend", None).read_ring()
    assert r is not None and r.entry(old_kid)["state"] == "revoked"  # type: ignore[index]
    assert old_kid not in r.accepts
    assert w.old.fingerprint not in w.backend_fingerprints()
    # Agents and backend stay on the new key: nobody is left on a key the backend refuses.
    assert w.violations == []
    assert f"previous key {old_kid} is revoked" in w.obj()["status"]["message"]


def test_a_finished_rotation_records_when_it_retired_the_old_key() -> None:
    w = World(HMAC)
    assert w.run() == "Completed"
    old_kid = w.obj()["status"]["previousKeyId"]
    r, _ = Backend(w.kube, NS, "fractal-lba-backend", None).read_ring()
    assert r is not None
    e = r.entry(old_kid) or {}
    assert e["state"] == "retired" and e.get("retired_at") and e.get("overlap_until")
    assert "retired" in (r.readmission_refused(w.old.fingerprint, LATER) or "")


def test_a_new_key_revoked_before_promotion_is_never_handed_to_agents() -> None:
    w = World(HMAC)
    w.run(until=frozenset({"Overlapping"}))
    new_kid = w.obj()["status"]["newKeyId"]
    _revoke_in_cluster(w, new_kid)
    assert w.run() == "Aborted"
    st = w.obj()["status"]
    ready = next(c for c in st["conditions"] if c["type"] == "Ready")
    assert ready["reason"] == "KeyRevoked", ready
    assert w.agent_fingerprint() == w.old.fingerprint
    assert w.backend_fingerprints() == [w.old.fingerprint]
    r, _ = Backend(w.kube, NS, "fractal-lba-backend", None).read_ring()
    assert r is not None and r.entry(new_kid)["state"] == "revoked"  # type: ignore[index]
    assert w.violations == []
