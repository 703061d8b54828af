"""Who is told of a monitoring alert, and how: owners, on-call rotas and channels.

The routing lives in the workspace's ``alerting.yaml`` (``Workspace.path("alerting")``);
a workspace without one notifies nobody and says so on every run. It declares::

    people:                       # the registry's names for people, with their addresses
      dr.ortiz: {email: ortiz@icu.example.org, webhook: icu-pager}
      dr.lee:   {email: lee@icu.example.org}
    webhooks:                     # named endpoints; the secret is read, never written down
      icu-pager: {url: https://pager.icu.example.org/hooks/mlops, secret_env: ICU_PAGER_SECRET}
    smtp: {host: smtp.icu.example.org, port: 587, starttls: true, sender: mlops@icu.example.org}
    rotas:                        # who is on call, computed from the clock
      icu-oncall: {people: [dr.ortiz, dr.lee], period_hours: 168, start: 2026-01-05T08:00:00Z}
    default: {owner: rota:icu-oncall, channels: [email, webhook]}
    rules:                        # per monitoring rule (else ``default``)
      auroc_degradation: {owner: rota:icu-oncall, channels: [email, webhook], escalate_after_minutes: 30}
      calibration: {owner: person:dr.lee, channels: [email]}
    delivery: {max_attempts: 5, backoff_seconds: 60, backoff_cap_seconds: 900, timeout_seconds: 10}
    auto_suspend: true

An owner is ``person:NAME`` or ``rota:NAME``. A rota hands over every ``period_hours``
from ``start``: the person on call at time *t* is ``people[floor((t - start) / period)
mod len(people)]``; escalation goes to the next person in the list. Webhook secrets come
from an environment variable (``secret_env``) or a file (``secret_file``), so the file
may be kept under change control and the secret never reaches a log or the ledger.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from clinical_mlops.errors import ValueInvalid
from clinical_mlops.tasks.spec import MONITORING_RULES
from clinical_mlops.workspace import Workspace

__all__ = [
    "CHANNELS",
    "AlertingConfig",
    "Recipient",
    "load_alerting",
    "webhook_secret",
]

Channel = Literal["email", "webhook"]
CHANNELS: tuple[Channel, ...] = ("email", "webhook")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Person(_Strict):
    """A person's addresses: an e-mail address and/or the name of a declared webhook."""

    email: str | None = Field(default=None, pattern=r"^[^@\s]+@[^@\s]+$")
    webhook: str | None = None


class Webhook(_Strict):
    """A webhook endpoint; its signing secret is read from ``secret_env`` or ``secret_file``."""

    url: str = Field(pattern=r"^https?://\S+$")
    secret_env: str | None = None
    secret_file: Path | None = None

    @model_validator(mode="after")
    def _one_secret(self) -> Webhook:
        if (self.secret_env is None) == (self.secret_file is None):
            raise ValueError("name exactly one of secret_env or secret_file")
        return self


class Smtp(_Strict):
    """The SMTP relay alerts are sent through (STARTTLS optional; login from the environment)."""

    host: str = Field(min_length=1)
    port: int = Field(default=25, ge=1, le=65535)
    starttls: bool = False
    sender: str = Field(pattern=r"^[^@\s]+@[^@\s]+$")
    username_env: str | None = None
    password_env: str | None = None


class Rota(_Strict):
    """An on-call rotation: ``people`` take turns of ``period_hours`` from ``start``."""

    people: tuple[str, ...] = Field(min_length=1)
    period_hours: float = Field(default=168, gt=0)
    start: datetime

    @model_validator(mode="after")
    def _aware(self) -> Rota:
        if self.start.tzinfo is None:
            raise ValueError("start: expected a time with its zone, e.g. 2026-01-05T08:00:00Z")
        return self

    def on_call(self, at: datetime, *, step: int = 0) -> str:
        """Return who is on call at ``at`` (``step`` > 0: that many people further along)."""
        turn = math.floor((at - self.start).total_seconds() / (3600.0 * self.period_hours))
        return self.people[(turn + step) % len(self.people)]


class Rule(_Strict):
    """How one rule's alerts reach a person: the owner, the channels, when to escalate."""

    owner: str = Field(pattern=r"^(person|rota):\S+$")
    channels: tuple[Channel, ...] = ("email",)
    escalate_after_minutes: float | None = Field(default=30, gt=0)


class Delivery(_Strict):
    """Retries: exponential backoff from ``backoff_seconds``, capped; dead-lettered after N."""

    max_attempts: int = Field(default=5, ge=1, le=50)
    backoff_seconds: float = Field(default=60, gt=0)
    backoff_cap_seconds: float = Field(default=900, gt=0)
    timeout_seconds: float = Field(default=10, gt=0, le=120)

    def backoff(self, attempts: int) -> float:
        """Return the wait in seconds after the ``attempts``-th failed attempt."""
        return min(self.backoff_cap_seconds, self.backoff_seconds * 2 ** (attempts - 1))


class AlertingConfig(_Strict):
    """The workspace's alert routing (see the module docstring)."""

    people: dict[str, Person] = Field(default_factory=dict)
    webhooks: dict[str, Webhook] = Field(default_factory=dict)
    smtp: Smtp | None = None
    rotas: dict[str, Rota] = Field(default_factory=dict)
    default: Rule | None = None
    rules: dict[str, Rule] = Field(default_factory=dict)
    delivery: Delivery = Delivery()
    auto_suspend: bool = True

    @model_validator(mode="after")
    def _consistent(self) -> AlertingConfig:
        problems: list[str] = []
        unknown = sorted(set(self.rules) - set(MONITORING_RULES))
        if unknown:
            problems.append(f"rules: unknown rule(s) {unknown}; rules are {list(MONITORING_RULES)}")
        for name, rota in self.rotas.items():
            missing = [p for p in rota.people if p not in self.people]
            if missing:
                problems.append(f"rotas.{name}.people: {missing} not declared under people")
        for name, person in self.people.items():
            if person.webhook is not None and person.webhook not in self.webhooks:
                problems.append(f"people.{name}.webhook: no webhook {person.webhook!r} declared")
        for where, rule in [("default", self.default), *self.rules.items()]:
            if rule is None:
                continue
            kind, _, name = rule.owner.partition(":")
            table: dict[str, Any] = self.people if kind == "person" else self.rotas
            if name not in table:
                problems.append(f"rules.{where}.owner: no {kind} {name!r} declared")
            if "email" in rule.channels and self.smtp is None:
                problems.append(f"rules.{where}.channels: email needs an smtp section")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def rule(self, name: str) -> Rule | None:
        """Return the routing of rule ``name`` (its own, else the default; None: nobody)."""
        return self.rules.get(name, self.default)

    def recipients(self, rule: str, at: datetime, *, step: int = 0) -> list[Recipient]:
        """Return who is told of an alert of ``rule`` at ``at``, one per (person, channel).

        ``step`` 0 is the owner (the person on call); ``step`` n the n-th person after
        them in the rota. A person owner has no one after them (empty for ``step`` > 0).
        """
        route = self.rule(rule)
        if route is None:
            return []
        kind, _, name = route.owner.partition(":")
        if kind == "rota":
            rota = self.rotas[name]
            if step >= len(rota.people):
                return []
            person = rota.on_call(at, step=step)
        elif step:
            return []
        else:
            person = name
        addr = self.people[person]
        out = []
        for channel in route.channels:
            target = addr.email if channel == "email" else addr.webhook
            if target:
                out.append(Recipient(person=person, channel=channel, target=target, step=step))
        return out


@dataclass(frozen=True)
class Recipient:
    """One person on one channel (``target``: the e-mail address or the webhook's name)."""

    person: str
    channel: str
    target: str
    step: int = 0


def load_alerting(workspace: Workspace) -> AlertingConfig | None:
    """Return the workspace's alert routing, None when it declares none.

    A malformed file is an error naming the field and what was expected, never
    silently ignored: alerts that should reach a person must not go nowhere.
    """
    path = workspace.path("alerting")
    if not path.exists():
        return None
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise ValueInvalid(f"{path}: not valid YAML ({exc})") from None
    if not isinstance(raw, dict):
        raise ValueInvalid(f"{path}: expected a mapping of people, rotas, rules ...")
    try:
        return AlertingConfig.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'alerting'}: {e['msg']}" for e in exc.errors()
        )
        raise ValueInvalid(f"{path}: {problems}") from None


def webhook_secret(hook: Webhook) -> bytes:
    """Return the signing secret of ``hook`` from its environment variable or file."""
    if hook.secret_env is not None:
        value = os.environ.get(hook.secret_env)
        if not value:
            raise ValueInvalid(f"webhook secret: environment variable {hook.secret_env} is not set")
        return value.encode("utf-8")
    assert hook.secret_file is not None
    try:
        return hook.secret_file.read_bytes().strip()
    except OSError as exc:
        raise ValueInvalid(
            f"webhook secret: cannot read {hook.secret_file} ({exc.strerror})"
        ) from None
