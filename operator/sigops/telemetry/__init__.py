"""What sigops exports about itself: the Prometheus metrics registry and its metrics."""
