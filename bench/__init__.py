"""qr-oidc benchmarks; run ``python -m bench`` (see bench/README.md)."""
