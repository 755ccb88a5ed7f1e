"""The daemon's HTTP side: the Sync Health page, /healthz and /metrics, and who may read them."""
