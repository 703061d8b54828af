"""Tables of the monitoring store in the workspace metadata database (SQLAlchemy Core).

They live beside the registry and governance tables (``meta.db`` by default,
``CLINICAL_MLOPS_META_URL`` for PostgreSQL); JSON columns hold canonical JSON
text so both backends store the same bytes.

* ``mon_alerts``: one row per alert, de-duplicated on ``dedup_key``
  (rule, release, subgroup) while it is open or acknowledged;
* ``mon_alert_points``: the time series behind each alert (drill-down plots);
* ``mon_review_items``: reviews requested by alerts (``open_review`` action);
* ``mon_deliveries``: the notification outbox, one row per alert x recipient x channel
  (UNIQUE), written in the alert's own transaction and delivered after it;
* ``mon_delivery_attempts``: every attempt to deliver one, with its outcome and reason;
* ``mon_dead_letters``: notifications given up after the last attempt, with the reason;
* ``mon_windows``: every evaluated monitoring window with all its quantities,
  the source of the Prometheus gauges and of the monitoring report.
"""

from __future__ import annotations

import sqlalchemy as sa

__all__ = [
    "alert_points",
    "alerts",
    "dead_letters",
    "deliveries",
    "delivery_attempts",
    "metadata",
    "review_items",
    "windows",
]

metadata = sa.MetaData()

alerts = sa.Table(
    "mon_alerts",
    metadata,
    sa.Column("id", sa.String(40), primary_key=True),
    sa.Column("rule", sa.String(80), nullable=False),
    sa.Column("kind", sa.String(20), nullable=False),
    sa.Column("severity", sa.String(20), nullable=False),
    sa.Column("owner_role", sa.String(40), nullable=False),
    sa.Column("action", sa.String(20), nullable=False),
    sa.Column("status", sa.String(20), nullable=False, index=True),
    sa.Column("release", sa.String(200), nullable=True),
    sa.Column("model_version", sa.String(200), nullable=True),
    sa.Column("subgroup", sa.String(200), nullable=True),
    sa.Column("dedup_key", sa.String(600), nullable=False, index=True),
    sa.Column("opened_at", sa.String(40), nullable=False),
    sa.Column("last_seen_at", sa.String(40), nullable=False),
    sa.Column("occurrences", sa.Integer, nullable=False),
    sa.Column("summary", sa.Text, nullable=False),
    sa.Column("detail", sa.Text, nullable=False),
    sa.Column("history", sa.Text, nullable=False),
    sa.Column("ledger_seq", sa.Integer, nullable=True),
    sa.Column("updated_at", sa.String(40), nullable=False),
)

alert_points = sa.Table(
    "mon_alert_points",
    metadata,
    sa.Column("alert_id", sa.String(40), primary_key=True),
    sa.Column("at", sa.String(40), primary_key=True),
    sa.Column("value", sa.Float, nullable=True),
)

review_items = sa.Table(
    "mon_review_items",
    metadata,
    sa.Column("id", sa.String(40), primary_key=True),
    sa.Column("release", sa.String(200), nullable=True, index=True),
    sa.Column("alert_id", sa.String(40), nullable=False),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("opened_by", sa.String(200), nullable=False),
    sa.Column("opened_at", sa.String(40), nullable=False),
    sa.Column("ledger_seq", sa.Integer, nullable=True),
)

windows = sa.Table(
    "mon_windows",
    metadata,
    sa.Column("release", sa.String(200), primary_key=True),
    sa.Column("window_end", sa.String(40), primary_key=True),
    sa.Column("n_inferences", sa.Integer, nullable=False),
    sa.Column("quantities", sa.Text, nullable=False),
)

deliveries = sa.Table(
    "mon_deliveries",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("alert_id", sa.String(40), nullable=False, index=True),
    sa.Column("recipient", sa.String(200), nullable=False),
    sa.Column("channel", sa.String(20), nullable=False),
    sa.Column("target", sa.String(400), nullable=False),
    sa.Column("step", sa.Integer, nullable=False),
    sa.Column("status", sa.String(20), nullable=False, index=True),
    sa.Column("attempts", sa.Integer, nullable=False),
    sa.Column("next_attempt_at", sa.String(40), nullable=False),
    sa.Column("last_reason", sa.Text, nullable=True),
    sa.Column("created_at", sa.String(40), nullable=False),
    sa.Column("delivered_at", sa.String(40), nullable=True),
    sa.UniqueConstraint("alert_id", "recipient", "channel", name="uq_mon_delivery"),
)

delivery_attempts = sa.Table(
    "mon_delivery_attempts",
    metadata,
    sa.Column("delivery_id", sa.Integer, primary_key=True),
    sa.Column("attempt", sa.Integer, primary_key=True),
    sa.Column("at", sa.String(40), nullable=False),
    sa.Column("outcome", sa.String(20), nullable=False),
    sa.Column("reason", sa.Text, nullable=False),
)

dead_letters = sa.Table(
    "mon_dead_letters",
    metadata,
    sa.Column("delivery_id", sa.Integer, primary_key=True),
    sa.Column("alert_id", sa.String(40), nullable=False, index=True),
    sa.Column("recipient", sa.String(200), nullable=False),
    sa.Column("channel", sa.String(20), nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("at", sa.String(40), nullable=False),
)
