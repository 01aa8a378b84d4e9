"""FHIR validation (fhir.resources, R4B models for R4 payloads) and OperationOutcome."""

from __future__ import annotations

from typing import Any

from fhir.resources.R4B import get_fhir_model_class
from pydantic import ValidationError

from connectors.pipeline import InputRejected

Issue = dict[str, Any]

# The status codes of the resources we map (required bindings in R4). fhir.resources checks
# structure and datatypes, not value sets; a status we do not know must not be guessed at.
EVENT_STATUS = (  # the R4 EventStatus value set
    "preparation",
    "in-progress",
    "not-done",
    "on-hold",
    "stopped",
    "completed",
    "entered-in-error",
    "unknown",
)
STATUS_CODES: dict[str, tuple[str, ...]] = {
    "Encounter": (
        "planned",
        "arrived",
        "triaged",
        "in-progress",
        "onleave",
        "finished",
        "cancelled",
        "entered-in-error",
        "unknown",
    ),
    "ServiceRequest": ("draft", "active", "on-hold", "revoked", "completed", "entered-in-error", "unknown"),
    "DiagnosticReport": (
        "registered",
        "partial",
        "preliminary",
        "final",
        "amended",
        "corrected",
        "appended",
        "cancelled",
        "entered-in-error",
        "unknown",
    ),
    "Observation": (
        "registered",
        "preliminary",
        "final",
        "amended",
        "corrected",
        "cancelled",
        "entered-in-error",
        "unknown",
    ),
    "Procedure": EVENT_STATUS,
    "Communication": EVENT_STATUS,
    "Task": (
        "draft",
        "requested",
        "received",
        "accepted",
        "rejected",
        "ready",
        "cancelled",
        "in-progress",
        "on-hold",
        "failed",
        "completed",
        "entered-in-error",
    ),
    "Specimen": ("available", "unavailable", "unsatisfactory", "entered-in-error"),
    "ChargeItem": ("planned", "billable", "not-billable", "aborted", "billed", "entered-in-error", "unknown"),
    "Claim": ("active", "cancelled", "draft", "entered-in-error"),
    "QuestionnaireResponse": ("in-progress", "completed", "amended", "entered-in-error", "stopped"),
    "Location": ("active", "suspended", "inactive"),
}


def issue(severity: str, code: str, text: str, expression: str | None = None) -> Issue:
    out: Issue = {"severity": severity, "code": code, "diagnostics": text}
    if expression:
        out["expression"] = [expression]
    return out


def outcome(issues: list[Issue]) -> dict[str, Any]:
    return {
        "resourceType": "OperationOutcome",
        "issue": issues or [issue("information", "informational", "ok")],
    }


class FHIRInputError(InputRejected):
    """The payload cannot be taken (the pipeline's InputRejected); carries the status and the
    issues to answer with (4xx); `where` is the first issue's element path."""

    def __init__(self, status: int, issues: list[Issue]):
        where = next((i["expression"][0] for i in issues if i.get("expression")), None)
        super().__init__("; ".join(i["diagnostics"] for i in issues), where)
        self.status = status
        self.issues = issues


def _expression(resource_type: str, loc: tuple[Any, ...]) -> str:
    path = resource_type
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else f".{part}"
    return path


def validate(resource: Any, expected_type: str | None = None) -> str:
    """Check a resource against the R4B model of its type; returns the type.

    Raises FHIRInputError with one issue per problem, each naming the element's path.
    """
    if not isinstance(resource, dict):
        raise FHIRInputError(
            400, [issue("error", "structure", "the body must be a JSON object (a FHIR resource)")]
        )
    resource_type = resource.get("resourceType")
    if not isinstance(resource_type, str):
        raise FHIRInputError(400, [issue("error", "required", "resourceType is missing", "resourceType")])
    if expected_type is not None and resource_type != expected_type:
        raise FHIRInputError(
            400,
            [
                issue(
                    "error",
                    "invalid",
                    f"resourceType is {resource_type!r} but the URL says {expected_type!r}",
                    "resourceType",
                )
            ],
        )
    try:
        model = get_fhir_model_class(resource_type)
    except (ValueError, KeyError):
        raise FHIRInputError(
            400,
            [
                issue(
                    "error",
                    "not-supported",
                    f"{resource_type!r} is not a FHIR R4 resource type",
                    "resourceType",
                )
            ],
        ) from None
    try:
        model.model_validate(resource)
    except ValidationError as exc:
        issues = [
            issue(
                "error",
                "invalid",
                f"{_expression(resource_type, tuple(e['loc']))}: {e['msg']}",
                _expression(resource_type, tuple(e["loc"])),
            )
            for e in exc.errors()[:20]
        ]
        raise FHIRInputError(400, issues) from exc
    allowed = STATUS_CODES.get(resource_type)
    status = resource.get("status")
    if allowed and status is not None and status not in allowed:
        path = f"{resource_type}.status"
        text = f"{path}: {status!r} is not a {resource_type} status ({', '.join(allowed)})"
        raise FHIRInputError(400, [issue("error", "code-invalid", text, path)])
    return resource_type


def problems(answer: dict[str, Any]) -> str:
    """The warnings and errors of an OperationOutcome, as one line."""
    return "; ".join(
        i.get("diagnostics", "") for i in answer.get("issue", []) if i.get("severity") != "information"
    )
