"""Tables of the registry (what exists: releases, their status history, the active release
and rollout per task), in SQLAlchemy Core, on the metadata database's one ``metadata``.

Governance declares its own tables (people, approvals, gates, reviews, incidents) on the
same ``metadata`` in :mod:`clinical_mlops.governance.schema`, so both live in one
database (``meta.db``). The same definitions run on SQLite (the default) and PostgreSQL
(``CLINICAL_MLOPS_META_URL``). JSON columns are stored as canonical JSON text so both
backends hold the same bytes.
"""

from __future__ import annotations

import sqlalchemy as sa

__all__ = [
    "active",
    "external_validations",
    "metadata",
    "releases",
    "rollouts",
    "transitions",
    "trials",
]

metadata = sa.MetaData()

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

#: candidate releases scored beside the live one at a site (silent or shadow trials); a
#: trial that ended keeps its row (``ended`` set), and the store holds at most one running
#: trial per (task, site, release): the partial unique index covers rows not yet ended
trials = sa.Table(
    "reg_trials",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("task", sa.String(100), nullable=False),
    sa.Column("site", sa.String(200), nullable=False),
    sa.Column("version", sa.String(200), nullable=False, index=True),
    sa.Column("mode", sa.String(20), nullable=False),
    sa.Column("started", sa.String(40), nullable=False),
    sa.Column("started_by", sa.String(200), nullable=False),
    sa.Column("why", sa.Text, nullable=False),
    sa.Column("ended", sa.String(40), nullable=True),
    sa.Column("ended_by", sa.String(200), nullable=True),
    sa.Column("end_why", sa.Text, nullable=True),
)
sa.Index(
    "uq_reg_trials_running",
    trials.c.task,
    trials.c.site,
    trials.c.version,
    unique=True,
    sqlite_where=trials.c.ended.is_(None),
    postgresql_where=trials.c.ended.is_(None),
)

#: external validations of a release (``clinical-mlops validate``): one per release,
#: snapshot and site selection (``sites`` is ``*`` for every stay of the snapshot)
external_validations = sa.Table(
    "reg_external_validations",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("version", sa.String(200), nullable=False, index=True),
    sa.Column("snapshot_id", sa.String(64), nullable=False),
    sa.Column("sites", sa.String(1000), nullable=False),
    sa.Column("year_from", sa.Integer, nullable=False),
    sa.Column("year_to", sa.Integer, nullable=False),
    sa.Column("n", sa.Integer, nullable=False),
    sa.Column("n_events", sa.Integer, nullable=False),
    sa.Column("auroc", sa.Float, nullable=True),
    sa.Column("summary", sa.Text, nullable=False),
    sa.Column("path", sa.Text, nullable=False),
    sa.Column("report_sha256", sa.String(64), nullable=False),
    sa.Column("html_sha256", sa.String(64), nullable=False),
    sa.Column("actor", sa.String(200), nullable=False),
    sa.Column("time", sa.String(40), nullable=False),
    sa.Column("ledger_seq", sa.Integer, nullable=True),
    sa.UniqueConstraint("version", "snapshot_id", "sites"),
)
