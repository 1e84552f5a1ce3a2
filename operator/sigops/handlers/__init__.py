"""kopf-facing reconcilers: KeyRotation, SignatureIncident and the alert intake."""
