"""The service shell around the pure core: the saga runtime, the outbox dispatcher and
relay, the deadline watcher, and the host every service process runs in."""
