"""Tables of governance (who may do what: people and their roles, approvals, gate results,
risk acknowledgements, review schedules, reviews, incidents), in SQLAlchemy Core.

Declared on the registry's ``metadata`` (:mod:`clinical_mlops.registry.schema`): both
live in the metadata database, under the table names they always had.
"""

from __future__ import annotations

import sqlalchemy as sa

from clinical_mlops.registry.schema import metadata

__all__ = [
    "approval_identities",
    "approvals",
    "gates",
    "incidents",
    "people",
    "person_keys",
    "review_packs",
    "reviews",
    "risk_acknowledgements",
    "schedules",
    "signed_acts",
]


people = sa.Table(
    "gov_people",
    metadata,
    sa.Column("name", sa.String(200), primary_key=True),
    sa.Column("roles", sa.Text, nullable=False),
    sa.Column("added", sa.String(40), nullable=False),
    sa.Column("added_by", sa.String(200), nullable=False),
)

# The public keys that prove a person's acts on the command line. One key belongs to one
# person: the primary key on the fingerprint, not a prior read, refuses registering it twice.
person_keys = sa.Table(
    "gov_person_keys",
    metadata,
    sa.Column("fingerprint", sa.String(100), primary_key=True),
    sa.Column("person", sa.String(200), nullable=False, index=True),
    sa.Column("public_key", sa.Text, nullable=False),
    sa.Column("added", sa.String(40), nullable=False),
    sa.Column("added_by", sa.String(200), nullable=False),
)

# Each signed statement is used once: its nonce is the primary key, so a signature replayed
# (even within its time window, even by two processes at once) is refused by the store.
signed_acts = sa.Table(
    "gov_signed_acts",
    metadata,
    sa.Column("nonce", sa.String(100), primary_key=True),
    sa.Column("fingerprint", sa.String(100), nullable=False),
    sa.Column("person", sa.String(200), nullable=False),
    sa.Column("action", sa.String(60), nullable=False),
    sa.Column("time", sa.String(40), nullable=False),
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

# The verified identity each approval or rejection was recorded with (one per decision); a
# table of its own so a workspace made before identities gains it without a migration.
approval_identities = sa.Table(
    "gov_approval_identities",
    metadata,
    sa.Column("approval_id", sa.Integer, primary_key=True),
    sa.Column("identity", sa.Text, nullable=False),
)

# One acknowledgement per release and risk: the unique constraint, not a prior read, refuses a
# second one (two people submitting at once cannot both be recorded).
risk_acknowledgements = sa.Table(
    "gov_risk_acknowledgements",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("version", sa.String(200), nullable=False),
    sa.Column("risk", sa.String(200), nullable=False),
    sa.Column("words", sa.Text, nullable=False),
    sa.Column("person", sa.String(200), nullable=False),
    sa.Column("role", sa.String(40), nullable=False),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("time", sa.String(40), nullable=False),
    sa.Column("ledger_seq", sa.Integer, nullable=True),
    sa.UniqueConstraint("version", "risk", name="uq_gov_risk_acknowledgement"),
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

# The live review pack a periodic review was recorded against (one per review), by hash; a
# table of its own so a workspace made before review packs gains it without a migration.
review_packs = sa.Table(
    "gov_review_packs",
    metadata,
    sa.Column("review_id", sa.Integer, primary_key=True),
    sa.Column("version", sa.String(200), nullable=False, index=True),
    sa.Column("sha256", sa.String(64), nullable=False),
    sa.Column("as_of", sa.String(40), nullable=False),
    sa.Column("pack", sa.Text, nullable=False),
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
