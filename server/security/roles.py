"""User roles and API-token scopes: the two vocabularies of access control, as plain enums.

Why apart from the tables and the permission table: the command line offers them as choices when it
builds its parser, for every command. Importing them from here costs nothing, while importing
``server.db.access_tables`` pulls in SQLAlchemy (~0.2 s) before ``wardwatch ingest`` could start decoding.
``server.db.access_tables.Role`` and ``server.security.permissions.Scope`` remain the names to import elsewhere.
"""

from __future__ import annotations

import enum


class Role(enum.StrEnum):
    clinician = "clinician"
    admin = "admin"
    auditor = "auditor"


class Scope(enum.StrEnum):
    read_events = "read:events"
    write_recordings = "write:recordings"
    review = "review"
    admin = "admin"
    audit = "audit"
