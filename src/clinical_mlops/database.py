"""One hardened way to open the project's databases (ledger, identity and metadata)."""
