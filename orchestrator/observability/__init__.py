"""What operators see of a running service: metrics, probes and traces."""
