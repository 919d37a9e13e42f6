"""Connector tests: the OIDC connector against the fake IdP, and the connector contract."""
