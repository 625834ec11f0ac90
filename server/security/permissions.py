"""The one table of who may do what: each permission names the roles that have it and the API-token scopes
that grant it.

A browser session acts with its user's role. An API token acts for its user too, but only within its scopes:
a request is allowed when the user's role has the permission *and* (for a token) one of its scopes grants it,
so a token can never do more than its user, and a user's role change takes effect on their tokens at once.

Decisions (README "Access control and audit"):
* clinicians review; an auditor or admin cannot (a review is a clinical act, signed by a clinician);
* only admins fine-tune, activate models, see jobs, and manage users, tokens and webhooks;
* subscribing a URL to events, or retrying a delivery, sends events out of Wardwatch, so it needs
  ``read_events`` as well as ``manage_webhooks`` (``EXPORT_BY_WEBHOOK``): a token with only ``admin`` may not
  read events, nor have them sent to a URL of its choosing;
* auditors read the audit trail (admins too) and may read events, to see what an entry refers to;
* uploading, importing and streaming need ``write:recordings`` (clinicians and admins).
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass

from server.db.access_tables import Role
from server.security.roles import Scope


class Permission(enum.StrEnum):
    read_events = "read_events"            # recordings, events, explanations, key frames, clips, overlays
    write_recordings = "write_recordings"  # upload, import, start / stop a stream
    review = "review"                      # confirm, reject, relabel an event
    read_models = "read_models"            # model versions (the review page needs their class names)
    read_jobs = "read_jobs"                # jobs carry parameters (stream sources), so admins only
    manage_models = "manage_models"        # fine-tune, cancel a job, activate / roll back a model
    read_audit = "read_audit"
    manage_users = "manage_users"          # users and tokens (REST, or the CLI on the server)
    manage_webhooks = "manage_webhooks"    # webhook subscriptions and their delivery log


@dataclass(frozen=True)
class Grant:
    roles: frozenset[Role]
    scopes: frozenset[Scope]


def _grant(roles: Iterable[Role], scopes: Iterable[Scope]) -> Grant:
    return Grant(frozenset(roles), frozenset(scopes))


C, A, U = Role.clinician, Role.admin, Role.auditor
PERMISSIONS: dict[Permission, Grant] = {
    Permission.read_events: _grant({C, A, U}, {Scope.read_events}),
    Permission.write_recordings: _grant({C, A}, {Scope.write_recordings}),
    Permission.review: _grant({C}, {Scope.review}),
    Permission.read_models: _grant({C, A, U}, {Scope.read_events, Scope.admin}),
    Permission.read_jobs: _grant({A}, {Scope.admin}),
    Permission.manage_models: _grant({A}, {Scope.admin}),
    Permission.read_audit: _grant({A, U}, {Scope.audit}),
    Permission.manage_users: _grant({A}, {Scope.admin}),
    Permission.manage_webhooks: _grant({A}, {Scope.admin}),
}

# A route may need several permissions (server.api.security.Guard): all of them, each granted as above. Sending
# events to a subscriber's URL is an export of them, so it also needs what reading them needs.
EXPORT_BY_WEBHOOK: tuple[Permission, ...] = (Permission.manage_webhooks, Permission.read_events)

# Permissions whose *allowed* reads are written to the audit trail: patient data, the trail itself, jobs (their
# parameters name stream sources), accounts / tokens and webhooks (the delivery log holds the events sent).
# Every write, and every refusal of any guarded route, is recorded whatever the permission.
AUDITED_READS = frozenset({Permission.read_events, Permission.read_audit, Permission.read_jobs,
                           Permission.manage_users, Permission.manage_webhooks})


def is_allowed(role: Role, scopes: frozenset[Scope] | None, permission: Permission) -> bool:
    """``scopes=None`` is a browser session (the role alone decides); a token also needs a granting scope."""
    grant = PERMISSIONS[permission]
    if role not in grant.roles:
        return False
    return scopes is None or bool(scopes & grant.scopes)


# The scopes a token of each role may hold: the ones named after what the role does. (``admin`` also lets a
# token read model versions, but a clinician's token asking for ``admin`` is refused, not quietly narrowed.)
ROLE_SCOPES: dict[Role, frozenset[Scope]] = {
    Role.clinician: frozenset({Scope.read_events, Scope.write_recordings, Scope.review}),
    Role.admin: frozenset({Scope.read_events, Scope.write_recordings, Scope.admin, Scope.audit}),
    Role.auditor: frozenset({Scope.read_events, Scope.audit}),
}


def usable_scopes(role: Role) -> frozenset[Scope]:
    """Scopes a token of this role may be created with; a token asking for others is refused."""
    return ROLE_SCOPES[role]


def permissions_of(role: Role, scopes: frozenset[Scope] | None) -> list[str]:
    return sorted(p.value for p in Permission if is_allowed(role, scopes, p))
