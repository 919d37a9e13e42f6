"""An extranet app behind the hub's identity-aware proxy; see README.md."""
