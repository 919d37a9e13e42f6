"""An app doing its own OIDC login against the hub, with back-channel logout; see README.md."""
