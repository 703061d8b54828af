"""Hardening fixtures: the served workspace of the serving tests, an app and credentials."""

from __future__ import annotations

import secrets
import warnings
from collections.abc import Iterator
from typing import Any

import pytest

from clinical_mlops.http.app import create_app
from clinical_mlops.serving import Predictor
from clinical_mlops.serving.auth import AuthConfig
from registry_helpers import trained  # noqa: F401
from serving.conftest import served  # noqa: F401

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # starlette warns that httpx is deprecated for TestClient
    from fastapi.testclient import TestClient


@pytest.fixture(scope="module")
def service(served: dict[str, Any]) -> Iterator[dict[str, Any]]:  # noqa: F811
    """The HTTP app over the served workspace, with an HS256 secret and one system API key."""
    predictor = Predictor.open(served["ws"], status_ttl=0.0)
    auth = AuthConfig.from_secret(secrets.token_hex(32))
    key = "cmk_" + secrets.token_hex(16)
    auth.add_api_key(key, name="ehr-interface", roles=["system"])
    app = create_app(predictor, auth, base_url="https://cds.example")
    with TestClient(app) as client:
        yield {
            "app": app,
            "client": client,
            "auth": auth,
            "key": key,
            "predictor": predictor,
        } | served
    predictor.close()
