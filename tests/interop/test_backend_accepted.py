"""PCS that the real upstream Go backend accepted, read in place from
``../shared/interop/kakeya-backend-accepted/`` (never copied here).

Each holds the PCS, the exact bytes its signature covers and the server's answer. They are the
ground truth for the ``go`` profile: keys in the backend's struct order, Go rounding, Go number
and string forms. They must verify under ``go`` and only there, and the sorted-key form that
the ``go`` profile used to produce must be refused.
"""

from __future__ import annotations

import base64
import hmac
import json
from pathlib import Path
from typing import Any

import pytest

from sigops import cli
from sigops.core.canonical import PROFILE_NAMES, canonical_bytes
from sigops.core.diagnose import Diagnoser
from sigops.core.keys import ED25519, HMAC, Key, KeyRing
from sigops.core.pcs import parse_pcs, signing_message

ACCEPTED = Path(__file__).resolve().parents[2].parent / "shared" / "interop" / \
    "kakeya-backend-accepted"
FILES = sorted(p.name for p in ACCEPTED.glob("backend_accepted_*.json")) if ACCEPTED.is_dir() \
    else []
# The keys the real server was started with (see the directory's README).
HMAC_SECRET = b"flk-backend-vector-key"
ED_SEED = bytes(range(32))
ED_PUB_B64 = "A6EHv/POEL4dcN0Y50vAmWfk1jCbpQ1fHdyGZBJVMbg="
GO_ORDER = ["budget", "coh_star", "D_hat", "epoch", "merkle_root", "pcs_id", "r", "shard_id"]

pytestmark = pytest.mark.skipif(
    not FILES, reason=f"backend-accepted vectors not found at {ACCEPTED}")


def doc(name: str) -> Any:
    return json.loads((ACCEPTED / name).read_bytes())


def keys() -> tuple[Key, Key]:
    ed = Key("vector-ed25519", ED25519, private_seed=ED_SEED)
    return Key("vector-hmac", HMAC, secret=HMAC_SECRET), ed


def ring(profile: str) -> KeyRing:
    return KeyRing(keys(), profile)


def test_the_six_vectors_are_here_and_were_accepted() -> None:
    assert len(FILES) == 6
    for name in FILES:
        assert doc(name)["real_backend_status"] in (200, 202), name
    assert base64.b64encode(keys()[1].public or b"").decode() == ED_PUB_B64


@pytest.mark.parametrize("name", FILES)
def test_go_profile_writes_the_exact_signed_bytes(name: str) -> None:
    d = doc(name)
    subset = parse_pcs(d["pcs"]).subset
    want = d["canonical_payload"].encode("utf-8")
    assert canonical_bytes(subset, "go") == want
    assert list(json.loads(want)) == GO_ORDER
    for p in PROFILE_NAMES:
        if p != "go":
            assert canonical_bytes(subset, p) != want, p


@pytest.mark.parametrize("name", FILES)
def test_valid_under_go_and_only_there(name: str) -> None:
    rec = doc(name)["pcs"]
    v = Diagnoser(ring("go")).classify_obj(rec, 0)
    assert (v.cause, v.profile) == ("valid", "go")
    for p in PROFILE_NAMES:
        if p != "go":
            other = Diagnoser(ring(p)).classify_obj(rec, 0)
            assert (other.cause, other.profile) == ("canonicalization_drift", "go"), p


@pytest.mark.parametrize("name", FILES)
def test_the_old_sorted_go_form_is_refused_under_go(name: str) -> None:
    """What the go profile used to sign (Go values, keys sorted) is no longer go form."""
    d = doc(name)
    pcs = parse_pcs(d["pcs"])
    go_doc = json.loads(d["canonical_payload"])
    # The same members (Go's text for each value), keys sorted.
    members = dict(zip(GO_ORDER, _member_texts(d["canonical_payload"]), strict=True))
    sorted_bytes = ("{" + ",".join(members[k] for k in sorted(go_doc)) + "}").encode()
    assert sorted_bytes != d["canonical_payload"].encode()
    assert json.loads(sorted_bytes) == go_doc
    hmac_key, ed_key = keys()
    key = hmac_key if pcs.alg == HMAC else ed_key
    forged = dict(d["pcs"], sig=base64.b64encode(
        key.sign(signing_message(sorted_bytes, pcs.alg))).decode())
    v = Diagnoser(ring("go")).classify_obj(forged, 0)
    assert v.cause != "valid" and v.profile != "go", v


def _member_texts(payload: str) -> list[str]:
    """The ``"key":value`` members of a flat canonical object, as written."""
    dec = json.JSONDecoder()
    out, i = [], 1
    while payload[i] != "}":
        key, j = dec.raw_decode(payload, i)
        _, k = dec.raw_decode(payload, j + 1)
        out.append(payload[i:k])
        assert key == GO_ORDER[len(out) - 1]
        i = k + 1 if payload[k] == "," else k
    return out


def test_hmac_vectors_are_hmac_over_the_payload() -> None:
    for name in FILES:
        d = doc(name)
        pcs = parse_pcs(d["pcs"])
        if pcs.alg == HMAC:
            mac = hmac.digest(HMAC_SECRET, d["canonical_payload"].encode(), "sha256")
            assert mac == pcs.sig, name


def _keyring_file(tmp_path: Path) -> Path:
    h, e = keys()
    entries = [h.to_entry(), {k: v for k, v in e.to_entry().items() if k != "private_b64"}]
    path = tmp_path / "keyring.json"
    path.write_text(json.dumps({"keys": entries}))
    return path


def test_sigops_golden_verifies_them_under_go_only(capsys: pytest.CaptureFixture[str],
                                                   tmp_path: Path) -> None:
    kr = str(_keyring_file(tmp_path))
    assert cli.main(["golden", "--keyring", kr, "--profile", "go", str(ACCEPTED)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["passed"] == out["total"] == 6
    assert {tuple(v["profiles"]) for v in out["vectors"]} == {("go",)}
    assert {v["kind"] for v in out["vectors"]} == {"accepted"}
    for p in PROFILE_NAMES:
        if p != "go":
            assert cli.main(["golden", "--keyring", kr, "--profile", p, str(ACCEPTED)]) == 1
            assert json.loads(capsys.readouterr().out)["failed"] == 6
