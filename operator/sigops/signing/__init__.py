"""sigops's own signatures: the signing key Secret and the published public keys (``store``),
and the signer that turns detections and actions into signed, hash-chained records
(``records``)."""
