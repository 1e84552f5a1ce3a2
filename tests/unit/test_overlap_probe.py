"""The live overlap probe against the testbed backend on loopback: a multi-key backend accepts
both keys during an overlap; one that holds one key (as the upstream Go server, which reads
``PCS_HMAC_KEY`` only) refuses the key its single variable does not name."""

from __future__ import annotations

import pytest

from sigops.backend.probe import OverlapProbe, probe_overlap
from sigops.core.keys import HMAC, Key
from sigops.testbed.backend import Backend, BackendServer
from sigops.testbed.reload import DEFAULT_NAMES, config_from_env, single_key_names

OLD = Key("old", HMAC, secret=b"overlap-probe-old-key")
NEW = Key("new", HMAC, secret=b"overlap-probe-new-key")
SUBMIT = "/v1/pcs/submit"


def serve(env: dict[str, str], single: bool) -> BackendServer:
    names = single_key_names() if single else DEFAULT_NAMES
    return BackendServer(Backend(config=config_from_env(env, names))).start()


@pytest.mark.parametrize(("primary", "single", "old_code", "new_code"), [
    ("old", False, 200, 200),   # multi-key backend during the overlap: both
    ("new", False, 200, 200),
    ("old", True, 200, 401),    # upstream during the overlap: the old key only
    ("new", True, 401, 200),    # upstream after promotion: the new key only
])
def test_backend_answers_to_old_and_new_key(primary: str, single: bool, old_code: int,
                                            new_code: int) -> None:
    env = {"PCS_SIGN_ALG": "hmac", "TOKEN_RATE": "1000",
           "PCS_HMAC_KEY": (OLD if primary == "old" else NEW).secret.decode(),  # type: ignore[union-attr]
           "PCS_HMAC_KEYS": f"{OLD.secret.decode()},{NEW.secret.decode()}"}  # type: ignore[union-attr]
    srv = serve(env, single)
    try:
        (a,) = probe_overlap([srv.url + SUBMIT], 5.0, OLD, NEW, "python")
    finally:
        srv.stop()
    assert (a.old, a.new) == (old_code, new_code)
    assert a.both_accepted == (old_code == new_code == 200)
    assert a.refuses_old == (old_code == 401)
    assert a.refuses_new == (new_code == 401)


def test_the_probes_are_signed_under_the_given_profile() -> None:
    env = {"PCS_SIGN_ALG": "hmac", "TOKEN_RATE": "1000", "PCS_HMAC_KEY": "k-go-only"}
    srv = BackendServer(Backend(config=config_from_env(env))).start()
    try:
        key = Key("k", HMAC, secret=b"k-go-only")
        (ok,) = probe_overlap([srv.url + SUBMIT], 5.0, key, key, "python")
        (drift,) = probe_overlap([srv.url + SUBMIT], 5.0, key, key, "go")
    finally:
        srv.stop()
    assert ok.both_accepted and (drift.old, drift.new) == (401, 401)


@pytest.mark.parametrize(("old", "new", "both", "refuses_old", "refuses_new"), [
    (200, 202, True, False, False),
    (None, 200, True, False, False),    # no signer for the old key: the new one decides
    (401, 200, False, True, False),
    (200, 401, False, False, True),
    (0, 200, False, False, False),      # unreachable, rate-limited, not ready: no verdict
    (200, 429, False, False, False),
    (503, 503, False, False, False),
    (400, 200, False, True, False),
])
def test_classification(old: int | None, new: int, both: bool, refuses_old: bool,
                        refuses_new: bool) -> None:
    a = OverlapProbe("u", old, new)
    assert (a.both_accepted, a.refuses_old, a.refuses_new) == (both, refuses_old, refuses_new)
    assert not a.no_submit_endpoint
    assert a.describe() == f"u: old key {'n/a' if old is None else old}, new key {new}"


@pytest.mark.parametrize(("old", "new", "none"), [
    (404, 404, True), (501, 501, True), (None, 405, True), (404, 200, False), (200, 501, False)])
def test_a_url_without_a_submit_endpoint_says_nothing_about_keys(old: int | None, new: int,
                                                                  none: bool) -> None:
    a = OverlapProbe("u", old, new)
    assert a.no_submit_endpoint == none
    assert not a.refuses_old and not a.refuses_new
