"""The service's OpenAPI document: security schemes, every error a route can answer, links.

FastAPI writes the routes and their request bodies; :func:`document` adds what a client
needs to trust it, all derived from the service's own tables so it cannot drift:

- the two security schemes (a JWT bearer token, an ``X-API-Key`` header) on every route
  :data:`~clinical_mlops.http.deps.ROUTE_ROLES` protects, with the roles it allows;
- each route's error responses with their body schemas: 401 and 403 where credentials are
  needed, 404, 409 where a request id can repeat, 413 and 422 where a body is read, 503
  everywhere (a store that cannot be read or written fails closed);
- the purposes the task's spec allows, as an enum;
- links from a prediction to its override and outcome, from the release list to a model
  card, and from CDS discovery to the service and its feedback, for clients and for
  stateful testing.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from clinical_mlops.http.deps import ROUTE_ROLES
from clinical_mlops.serving.predictor import Predictor

__all__ = ["document"]

BEARER, API_KEY = "bearer", "apiKey"

_DETAIL = {
    "type": "object",
    "required": ["code", "message"],
    "properties": {
        "code": {"type": "string", "description": "The error or refusal code"},
        "message": {"type": "string", "description": "What is wrong and what to do"},
        "http_status": {"type": "integer"},
        "audit_seq": {
            "type": ["integer", "null"],
            "description": "The ledger entry recording a refusal",
        },
    },
}
_FIELD = {
    "type": "object",
    "required": ["loc", "msg", "type"],
    "properties": {
        "loc": {
            "type": "array",
            "items": {"anyOf": [{"type": "string"}, {"type": "integer"}]},
            "description": "Where the problem is: 'body', then keys and list positions",
        },
        "msg": {"type": "string"},
        "type": {"type": "string"},
    },
}
SCHEMAS: dict[str, dict[str, Any]] = {
    "Problem": {
        "type": "object",
        "required": ["detail"],
        "description": "An error or a refusal, with its code and message",
        "properties": {"detail": {"$ref": "#/components/schemas/ProblemDetail"}},
    },
    "ProblemDetail": _DETAIL,
    "FieldProblem": _FIELD,
    "InvalidRequest": {
        "type": "object",
        "required": ["detail"],
        "description": "Fields that fail validation, each by location; or a refusal (422)",
        "properties": {
            "detail": {
                "anyOf": [
                    {"type": "array", "items": {"$ref": "#/components/schemas/FieldProblem"}},
                    {"$ref": "#/components/schemas/ProblemDetail"},
                ]
            }
        },
    },
    "Message": {
        "type": "object",
        "required": ["detail"],
        "description": "An HTTP-level refusal with its reason",
        "properties": {"detail": {"type": "string"}},
    },
}

_ERRORS: dict[int, tuple[str, str]] = {
    401: ("Problem", "No credentials, or credentials that do not verify"),
    403: ("Problem", "The credentials lack a role of this route, or the request is refused"),
    404: ("Problem", "Not found (subject, prediction, release or service), a refusal"),
    409: ("Problem", "The request id was already served"),
    413: ("Message", "The body is larger than the service accepts"),
    422: ("InvalidRequest", "The body, a field or an input is invalid, named by location"),
    503: (
        "Problem",
        "A store or the key server cannot be used now, or no release is served here",
    ),
}
#: routes that score, where a request id can repeat
_SCORING = {
    ("post", "/v1/predict"),
    ("post", "/v1/fhir/predict"),
    ("post", "/cds-services/{service_id}"),
}
_PREDICTION = {
    "type": "object",
    "required": ["format", "status", "request_id", "audit_seq"],
    "description": "One prediction: shown (scored), logged only (shadow), the baseline "
    "(fallback) or refused, each with its audit record",
    "properties": {
        "format": {"type": "string"},
        "status": {"type": "string", "enum": ["scored", "shadow", "fallback", "refused"]},
        "request_id": {"type": "string"},
        "audit_seq": {"type": ["integer", "null"]},
        "release": {"type": ["string", "null"]},
        "model_version": {"type": ["string", "null"]},
        "mode": {"type": ["string", "null"]},
        "flags": {"type": "array", "items": {"type": "string"}},
        "probability": {"type": ["number", "null"]},
        "risk": {"type": ["string", "null"]},
        "threshold": {"type": ["number", "null"]},
        "above_threshold": {"type": ["boolean", "null"]},
        "conformal_set": {"type": ["array", "null"], "items": {"type": "string"}},
        "coverage": {"type": ["number", "null"]},
        "contributions": {"type": "array", "items": {"type": "object"}},
        "completeness": {"type": ["number", "null"]},
        "escalated": {"type": "boolean"},
        "escalation": {"type": "array", "items": {"type": "string"}},
        "fallback": {"type": ["object", "null"]},
        "refusal": {"type": ["object", "null"]},
    },
}
_SUCCESS: dict[tuple[str, str], dict[str, Any]] = {
    ("post", "/v1/predict"): {
        "anyOf": [
            {"$ref": "#/components/schemas/Prediction"},
            {
                "type": "object",
                "required": ["results"],
                "properties": {
                    "results": {
                        "type": "array",
                        "items": {"$ref": "#/components/schemas/Prediction"},
                    }
                },
            },
        ]
    },
    ("post", "/v1/fhir/predict"): {
        "type": "object",
        "description": (
            "A FHIR R4 collection Bundle (application/fhir+json) when scored: the "
            "RiskAssessment, then its Provenance (release, bundle hash, audit record)"
        ),
        "required": ["resourceType", "type", "entry"],
        "properties": {
            "resourceType": {"const": "Bundle"},
            "type": {"const": "collection"},
            "entry": {"type": "array", "minItems": 2, "maxItems": 2},
        },
    },
    ("post", "/v1/outcomes"): {
        "type": "object",
        "required": ["outcome_seqs"],
        "properties": {"outcome_seqs": {"type": "array", "items": {"type": "integer"}}},
    },
    ("post", "/cds-services/{service_id}/feedback"): {
        "type": "object",
        "required": ["override_seqs"],
        "properties": {"override_seqs": {"type": "array", "items": {"type": "integer"}}},
    },
}
_LINKS: dict[tuple[str, str], dict[str, dict[str, Any]]] = {
    ("post", "/v1/predict"): {
        "Override": {
            "operationId": "override",
            "requestBody": {"prediction_id": "$response.body#/audit_seq"},
        },
        "Outcome": {
            "operationId": "outcome",
            "requestBody": {"prediction_ids": ["$response.body#/audit_seq"]},
        },
    },
    ("get", "/v1/models"): {
        "ModelCard": {
            "operationId": "model_card",
            "parameters": {"release": "$response.body#/releases/0/version"},
        }
    },
    ("get", "/cds-services"): {
        "Call": {
            "operationId": "cds_call",
            "parameters": {"service_id": "$response.body#/services/0/id"},
        },
        "Feedback": {
            "operationId": "cds_feedback",
            "parameters": {"service_id": "$response.body#/services/0/id"},
        },
    },
    ("post", "/cds-services/{service_id}"): {
        "Feedback": {
            "operationId": "cds_feedback",
            "parameters": {"service_id": "$request.path.service_id"},
            "requestBody": {
                "feedback": [{"card": "$response.body#/cards/0/uuid", "outcome": "accepted"}]
            },
        }
    },
}


def _json(schema: dict[str, Any]) -> dict[str, Any]:
    return {"application/json": {"schema": schema}}


def document(app: FastAPI, predictor: Predictor) -> None:
    """Make ``app.openapi()`` return the service's full document (built once, then kept)."""

    def build() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        doc = get_openapi(
            title=app.title,
            version=app.version,
            description=app.description,
            routes=app.routes,
        )
        components = doc.setdefault("components", {})
        schemas = components.setdefault("schemas", {})
        schemas |= SCHEMAS | {"Prediction": _PREDICTION}
        components["securitySchemes"] = {
            BEARER: {
                "type": "http",
                "scheme": "bearer",
                "bearerFormat": "JWT",
                "description": "A JWT for this service's audience with 'sub', 'exp' and a "
                "'roles' list; an optional 'site' claim is the rollout site",
            },
            API_KEY: {
                "type": "apiKey",
                "in": "header",
                "name": "X-API-Key",
                "description": "A system's API key, with its roles and sites",
            },
        }
        for path, operations in doc.get("paths", {}).items():
            for method, op in operations.items():
                _describe(op, method, path)
        purposes = predictor.scorer(predictor.default).spec.consent.purposes_allowed
        for name in ("PredictItem", "FhirPredict"):
            prop = schemas.get(name, {}).get("properties", {}).get("purpose")
            if prop is not None:
                prop["enum"] = list(purposes)
        app.openapi_schema = doc
        return doc

    app.openapi = build  # type: ignore[method-assign]


def _describe(op: dict[str, Any], method: str, path: str) -> None:
    """Add security, roles, error responses, the success schema and links to one operation."""
    roles = ROUTE_ROLES[(method.upper(), path)]
    responses = op.setdefault("responses", {})
    codes = [404, 413, 503]
    if roles:
        op["security"] = [{BEARER: []}, {API_KEY: []}]
        op["description"] = (op.get("description", "") + f"\n\nRoles: {', '.join(roles)}.").strip()
        codes += [401, 403]
    else:
        op["security"] = []
        op["description"] = (op.get("description", "") + "\n\nOpen: no credentials.").strip()
    if "requestBody" in op or op.get("parameters"):
        codes.append(422)
    if (method, path) in _SCORING:
        codes.append(409)
    for code in sorted(codes):
        schema, why = _ERRORS[code]
        responses[str(code)] = {
            "description": why,
            "content": _json({"$ref": f"#/components/schemas/{schema}"}),
        }
    success = next((c for c in responses if c.startswith("2")), None)
    if success is not None:
        if (method, path) == ("post", "/v1/fhir/predict"):
            # scored: RiskAssessment + Provenance; logged only or the baseline: the prediction
            responses[success]["content"] = {
                "application/fhir+json": {"schema": _SUCCESS[(method, path)]},
                "application/json": {"schema": {"$ref": "#/components/schemas/Prediction"}},
            }
        elif (method, path) in _SUCCESS:
            responses[success]["content"] = _json(_SUCCESS[(method, path)])
        if (method, path) in _LINKS:
            responses[success]["links"] = _LINKS[(method, path)]
