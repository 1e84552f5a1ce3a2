"""The verification core: pure Python, no Kubernetes, kopf or network imports.

Public surface: canonical forms (:mod:`.canonical`), key rings (:mod:`.keys`), PCS parsing and
signing (:mod:`.pcs`), diagnosis (:mod:`.diagnose`), signed signals (:mod:`.signals`), the
rate limiter (:mod:`.ratelimit`) and golden vectors (:mod:`.golden`).
"""

from .canonical import PROFILE_NAMES, PROFILES, SIGNED_FIELDS, canonical_bytes
from .diagnose import CAUSE_NAMES, CAUSES, Diagnoser, Verdict, aggregate
from .errors import KeyringError, MalformedInput, SignalRejected, SigopsError
from .keys import ED25519, HMAC, Key, KeyRing, generate_key, keyring_from_dict, load_keyring
from .pcs import PCS, Sample, expected_pcs_id, parse_pcs, parse_record, sign_pcs
from .ratelimit import Decision, SlidingWindowLimiter
from .signals import (
    build_payload,
    load_pubkeys,
    sign_signal,
    signal_hash,
    verify_chain,
    verify_signal,
)

__all__ = [
    "PROFILES", "PROFILE_NAMES", "SIGNED_FIELDS", "canonical_bytes",
    "CAUSES", "CAUSE_NAMES", "Diagnoser", "Verdict", "aggregate",
    "SigopsError", "MalformedInput", "KeyringError", "SignalRejected",
    "HMAC", "ED25519", "Key", "KeyRing", "generate_key", "keyring_from_dict", "load_keyring",
    "PCS", "Sample", "expected_pcs_id", "parse_pcs", "parse_record", "sign_pcs",
    "Decision", "SlidingWindowLimiter",
    "build_payload", "sign_signal", "verify_signal", "signal_hash", "verify_chain",
    "load_pubkeys",
]
