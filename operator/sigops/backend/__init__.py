"""The FLK backend as sigops sees it: its signing env (pure), the managed key ring (pure), its
Deployment on the API server, the live probe, and last-known-good template snapshots."""
