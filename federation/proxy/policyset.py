"""Every app's compiled policy, by app id (no policy: deny all, never allow all)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path

import policies
from federation.settings import AppSettings


def load_app_policy(app: AppSettings) -> policies.Policy:
    """The app's compiled policy; no policy at all means deny all (never allow all)."""
    insensitive = app.case_insensitive_paths
    if app.policy_file is not None:
        return policies.load_policy(
            Path(app.policy_file),
            name=str(app.policy_file),
            app_id=app.id,
            case_insensitive_paths=insensitive,
        )
    if app.policy is not None:
        return policies.load_policy(
            app.policy,
            name=f"apps.{app.id}.policy",
            app_id=app.id,
            case_insensitive_paths=insensitive,
        )
    return policies.DENY_ALL


class PolicySet:
    """Policies of every app, compiled once at start-up."""

    def __init__(self, apps: Iterable[AppSettings]) -> None:
        self._policies = {app.id: load_app_policy(app) for app in apps}

    @classmethod
    def of(cls, policies_by_app: Mapping[str, policies.Policy]) -> PolicySet:
        made = cls(())
        made._policies = dict(policies_by_app)
        return made

    def policy(self, app_id: str) -> policies.Policy:
        return self._policies.get(app_id, policies.DENY_ALL)
