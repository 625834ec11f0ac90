"""The refusals every API operation can answer, written into the OpenAPI document.

Most 4xx answers do not come from a route's own code but from what it is built with: its Guard (401, 403),
its path parameters (404 for an unknown or hidden ID), its request body (400 undecodable, 408 stalled, 413
too large, 422 invalid) and FastAPI's validation of every parameter (422). Declaring them route by route
would be forgotten on the next route; they are derived here from each operation instead, once, when the
document is built. A route still declares the answers of its own (409, 429, a 403 of its own rule) with
``responses=``; those keep their description and get the error body schema if they name none.

Every error body is JSON: ``{"detail": "..."}`` (``ErrorPublic``), and for 422 either that or the list of
invalid fields (``ValidationErrorPublic``).
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from pydantic.json_schema import models_json_schema

from server.api.security import api_routes, route_guards
from server.schemas import ErrorPublic, ValidationErrorPublic

REF = "#/components/schemas/{model}"
GUARDED = {401: "no valid credentials (sign in, or send 'Authorization: Bearer <token>')",
           403: "the role or the token's scopes may not do this (or a cookie write lacks its X-CSRF-Token)"}
WITH_PATH = {404: "no such record, or not one this caller may see"}
WITH_BODY = {400: "the body could not be decoded (not UTF-8, not JSON)",
             408: "the body stalled: no bytes arrived within the idle timeout",
             413: "the body is larger than the limit"}
WITH_INPUT = {422: "invalid parameters or body"}


def install(app: FastAPI) -> None:
    """Make ``app.openapi()`` document the derived refusals (FastAPI's documented way to extend the schema)."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            document_refusals(build(), guarded_operations(app))
        assert app.openapi_schema is not None
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def guarded_operations(app: FastAPI) -> set[tuple[str, str]]:
    """(method, path) of every operation behind a Guard (public ones, such as sign-in, are not)."""
    return {(method.lower(), route.path) for route in api_routes(app.routes) for method in route.methods or ()
            if route_guards(route.dependant)}


def document_refusals(schema: dict[str, Any], guarded: set[tuple[str, str]]) -> None:
    """Add the derived 4xx answers, with their body schema, to every operation of ``schema`` (in place)."""
    _, definitions = models_json_schema([(ErrorPublic, "serialization"), (ValidationErrorPublic, "serialization")],
                                        ref_template=REF)
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    components.update(definitions.get("$defs", {}))
    components.pop("HTTPValidationError", None)  # FastAPI's 422 body; ours says more (see ValidationErrorPublic)
    components.pop("ValidationError", None)
    for path, item in schema.get("paths", {}).items():
        for method, operation in item.items():
            if not isinstance(operation, dict) or "responses" not in operation:
                continue
            parameters = operation.get("parameters", [])
            derived: dict[int, str] = {}
            if (method, path) in guarded:
                derived |= GUARDED
            if any(p.get("in") == "path" for p in parameters):
                derived |= WITH_PATH
            if "requestBody" in operation:
                derived |= WITH_BODY
            if parameters or "requestBody" in operation:
                derived |= WITH_INPUT
            responses = operation["responses"]
            for status, description in derived.items():
                responses.setdefault(str(status), {"description": description})
            for status, response in responses.items():
                if status.isdigit() and 400 <= int(status) < 500:
                    _error_body(int(status), response)


def _error_body(status: int, response: dict[str, Any]) -> None:
    model = ValidationErrorPublic if status == 422 else ErrorPublic
    content = response.setdefault("content", {})
    declared = content.get("application/json", {}).get("schema")
    if declared is None or declared.get("$ref") == REF.format(model="HTTPValidationError"):
        content["application/json"] = {"schema": {"$ref": REF.format(model=model.__name__)}}
