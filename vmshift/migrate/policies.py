"""The policies by name, as --policy chooses them."""

from __future__ import annotations

from vmshift.migrate.adaptive import adaptive
from vmshift.migrate.policy import Policy, fixed, nova

POLICIES: dict[str, Policy] = {"fixed": fixed, "nova": nova, "adaptive": adaptive}


def get_policy(name: str) -> Policy:
    return POLICIES[name]
