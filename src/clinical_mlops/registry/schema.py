"""Tables of the metadata database (registry and governance), in SQLAlchemy Core.

The same definitions run on SQLite (``meta.db``, the default) and PostgreSQL
(``CLINICAL_MLOPS_META_URL``). JSON columns are stored as canonical JSON text so
both backends hold the same bytes.
"""

from __future__ import annotations

import sqlalchemy as sa

__all__ = [
    "active",
    "approvals",
    "gates",
    "incidents",
    "metadata",
    "people",
    "releases",
    "reviews",
    "rollouts",
    "schedules",
    "transitions",
]

metadata = sa.MetaData()

people = sa.Table(
    "gov_people",
    metadata,
    sa.Column("name", sa.String(200), primary_key=True),
    sa.Column("roles", sa.Text, nullable=False),
    sa.Column("added", sa.String(40), nullable=False),
    sa.Column("added_by", sa.String(200), nullable=False),
)

releases = sa.Table(
    "reg_releases",
    metadata,
    sa.Column("version", sa.String(200), primary_key=True),
    sa.Column("task", sa.String(100), nullable=False, index=True),
    sa.Column("number", sa.Integer, nullable=False),
    sa.Column("bundle_sha256", sa.String(64), nullable=False, unique=True),
    sa.Column("model_version", sa.String(200), nullable=False),
    sa.Column("path", sa.Text, nullable=False),
    sa.Column("author", sa.String(200), nullable=False),
    sa.Column("registered", sa.String(40), nullable=False),
    sa.Column("status", sa.String(40), nullable=False),
    sa.Column("suspended_from", sa.String(40), nullable=True),
    sa.Column("threshold", sa.Float, nullable=False),
    sa.Column("change", sa.Text, nullable=False),
    sa.UniqueConstraint("task", "number"),
)

transitions = sa.Table(
    "reg_transitions",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("version", sa.String(200), nullable=False, index=True),
    sa.Column("from_status", sa.String(40), nullable=True),
    sa.Column("to_status", sa.String(40), nullable=False),
    sa.Column("actor", sa.String(200), nullable=False),
    sa.Column("role", sa.String(40), nullable=False),
    sa.Column("why", sa.Text, nullable=False),
    sa.Column("time", sa.String(40), nullable=False),
    sa.Column("ledger_seq", sa.Integer, nullable=True),
)

gates = sa.Table(
    "reg_gates",
    metadata,
    sa.Column("version", sa.String(200), primary_key=True),
    sa.Column("gate", sa.String(60), primary_key=True),
    sa.Column("passed", sa.Boolean, nullable=False),
    sa.Column("evidence", sa.Text, nullable=False),
    sa.Column("actor", sa.String(200), nullable=False),
    sa.Column("time", sa.String(40), nullable=False),
)

approvals = sa.Table(
    "gov_approvals",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("version", sa.String(200), nullable=False, index=True),
    sa.Column("person", sa.String(200), nullable=False),
    sa.Column("role", sa.String(40), nullable=False),
    sa.Column("decision", sa.String(20), nullable=False),
    sa.Column("why", sa.Text, nullable=False),
    sa.Column("time", sa.String(40), nullable=False),
)

active = sa.Table(
    "reg_active",
    metadata,
    sa.Column("task", sa.String(100), primary_key=True),
    sa.Column("version", sa.String(200), nullable=False),
    sa.Column("since", sa.String(40), nullable=False),
)

rollouts = sa.Table(
    "reg_rollouts",
    metadata,
    sa.Column("task", sa.String(100), primary_key=True),
    sa.Column("site", sa.String(200), primary_key=True),
    sa.Column("version", sa.String(200), nullable=False),
    sa.Column("mode", sa.String(20), nullable=False),
    sa.Column("since", sa.String(40), nullable=False),
)

schedules = sa.Table(
    "gov_review_schedules",
    metadata,
    sa.Column("task", sa.String(100), primary_key=True),
    sa.Column("interval_days", sa.Integer, nullable=False),
)

reviews = sa.Table(
    "gov_reviews",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("version", sa.String(200), nullable=False, index=True),
    sa.Column("reviewer", sa.String(200), nullable=False),
    sa.Column("role", sa.String(40), nullable=False),
    sa.Column("checklist", sa.Text, nullable=False),
    sa.Column("outcome", sa.String(40), nullable=False),
    sa.Column("time", sa.String(40), nullable=False),
)

incidents = sa.Table(
    "gov_incidents",
    metadata,
    sa.Column("id", sa.String(40), primary_key=True),
    sa.Column("version", sa.String(200), nullable=False),
    sa.Column("status", sa.String(20), nullable=False),
    sa.Column("severity", sa.String(20), nullable=False),
    sa.Column("summary", sa.Text, nullable=False),
    sa.Column("roles", sa.Text, nullable=False),
    sa.Column("steps", sa.Text, nullable=False),
    sa.Column("opened", sa.String(40), nullable=False),
    sa.Column("updated", sa.String(40), nullable=False),
)
