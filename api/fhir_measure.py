"""A KPI as an HL7 FHIR R4 Measure, and a period report as the matching R4 MeasureReport.

Nothing is computed here: the MeasureReport is the period report of /api/v1/reports/{kpi}
(engine/reports.py over the event log) put into FHIR's shape: one group per facility (its
roll-up row) stratified by unit (the unit rows).

Scoring follows what the KPI's value is:
- proportion: a share of a population in % (pct_within, a ratio or gauge in %, top-box);
- ratio: a rate with a denominator of another kind (falls per 1,000 patient-days, USD per
  patient-day, turnover %/year);
- continuous-variable: a statistic of observations (durations, means, percentiles, sums).

FHIR R4 population counts are integers. A ratio's numerator or denominator that is not a
whole number (patient-days from the continuous census, hours, dollars) is given exactly in
the extension AMOUNT_URL (valueDecimal) and its count left out; whole numbers are counts.
The numbers are the period report's own: a gauge's (bed occupancy's) numerator and
denominator are its integrals, patient-seconds over bed-seconds, as /api/v1/reports gives them.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from engine.definitions.kpi import Direction, KpiDefinition
from engine.report_rows import ReportRow

FHIR_JSON = "application/fhir+json"
POPULATION_SYSTEM = "http://terminology.hl7.org/CodeSystem/measure-population"
SCORING_SYSTEM = "http://terminology.hl7.org/CodeSystem/measure-scoring"
IMPROVEMENT_SYSTEM = "http://terminology.hl7.org/CodeSystem/measure-improvement-notation"
UCUM = "http://unitsofmeasure.org"
AMOUNT_URL = "urn:carescore:fhir:extension:population-amount"
STRATIFIER_SYSTEM = "urn:carescore:stratifier"
UNIT_SYSTEM = "urn:carescore:unit"
FACILITY_SYSTEM = "urn:carescore:facility"

# The KPI unit -> the UCUM code of its value. UCUM annotations ({...}) are unity: they name
# what is counted without changing the quantity. "per 1,000 patient-days" is therefore
# "/10*3{patient-days}": the value times 10^-3 is the plain ratio falls / patient-days, with
# patient-days counted as NDNQI counts them (a number of patient-days, not a duration; as a
# duration the value would be 1/d and "falls per 1,000 d" would misread it). Money has no
# UCUM unit: {USD} is an annotation, the currency named in the unit text.
UCUM_CODES: dict[str, str] = {
    "%": "%",
    "min": "min",
    "h": "h",
    "days": "d",
    "%/year": "%/a",
    "of 5": "{score}",
    "patients/nurse": "{patients}/{nurse}",
    "h/patient-day": "h/{patient-day}",
    "h/nurse": "h/{nurse}",
    "USD/procedure": "{USD}/{procedure}",
    "USD/patient-day": "{USD}/{patient-day}",
    "USD/adjusted patient-day": "{USD}/{adjusted_patient-day}",
}
_PER = re.compile(r"^per ([0-9][0-9,]*) (.+)$")


def ucum_code(unit: str) -> str:
    """The UCUM code for a KPI's unit ("per 1,000 patient-days" -> "/10*3{patient-days}")."""
    if unit in UCUM_CODES:
        return UCUM_CODES[unit]
    match = _PER.match(unit)
    if match:
        n = int(match.group(1).replace(",", ""))
        what = match.group(2).replace(" ", "_")
        exponent = len(str(n)) - 1
        if n == 10**exponent:
            return f"/10*{exponent}{{{what}}}" if exponent else f"/{{{what}}}"
        return f"/{n}{{{what}}}"
    return "{" + re.sub(r"[^!-z|~]", "_", unit) + "}"  # an annotation: unity, named


def scoring_of(kpi: KpiDefinition) -> str:
    agg = kpi.aggregate
    if agg in ("ratio", "top_box", "pct_within"):
        return "proportion" if kpi.unit == "%" else "ratio"
    return "continuous-variable"


def _codeable(system: str, code: str, display: str | None = None) -> dict[str, Any]:
    coding: dict[str, Any] = {"system": system, "code": code}
    if display:
        coding["display"] = display
    return {"coding": [coding]}


def _population_codes(scoring: str) -> list[str]:
    if scoring == "continuous-variable":
        return ["initial-population", "measure-population", "measure-observation"]
    return ["initial-population", "numerator", "denominator"]


def measure(kpi: KpiDefinition, url: str) -> dict[str, Any]:
    scoring = scoring_of(kpi)
    words = {
        "initial-population": f"Everything {kpi.name} counts in the period, per unit",
        "numerator": f"Numerator: {kpi.definition.strip()}",
        "denominator": f"Denominator: {kpi.definition.strip()}",
        "measure-population": f"Observations of {kpi.name} in the period",
        "measure-observation": f"{kpi.aggregate} of the observations ({kpi.unit}): {kpi.definition.strip()}",
    }
    resource: dict[str, Any] = {
        "resourceType": "Measure",
        "id": kpi.id.replace("_", "-"),
        "url": url,
        "identifier": [{"system": "urn:carescore:kpi", "value": kpi.id}],
        "name": "".join(part.capitalize() for part in kpi.id.split("_")),
        "title": kpi.name,
        "status": "active",
        "description": kpi.description.strip(),
        "scoring": _codeable(SCORING_SYSTEM, scoring),
        "improvementNotation": _codeable(
            IMPROVEMENT_SYSTEM, "increase" if kpi.direction == Direction.higher_is_better else "decrease"
        ),
        "definition": [kpi.definition.strip()],
        "group": [
            {
                "description": f"{kpi.name} ({kpi.unit}), {kpi.aggregate}",
                "population": [
                    {
                        "code": _codeable(POPULATION_SYSTEM, code),
                        "description": words[code],
                        # the KPI's definition in words (R4 requires a criteria expression;
                        # carescore's is its kpi_defs measure, not CQL)
                        "criteria": {"language": "text/plain", "expression": words[code]},
                    }
                    for code in _population_codes(scoring)
                ],
                "stratifier": [
                    {"code": {"text": "unit"}, "description": "the hospital unit (ward) the value belongs to"}
                ],
            }
        ],
    }
    if kpi.standard is not None:
        resource["relatedArtifact"] = [
            {
                "type": "citation",
                "citation": kpi.standard.source.strip(),
                "display": kpi.standard.text.strip(),
            }
        ]
    return resource


def _population(code: str, amount: float | int | None) -> dict[str, Any]:
    entry: dict[str, Any] = {"code": _codeable(POPULATION_SYSTEM, code)}
    if amount is None:
        return entry
    if float(amount).is_integer():
        entry["count"] = int(amount)
    else:
        entry["extension"] = [{"url": AMOUNT_URL, "valueDecimal": round(float(amount), 6)}]
    return entry


def _counts(scoring: str, row: ReportRow | None) -> list[dict[str, Any]]:
    if row is None:
        return [_population(code, 0) for code in _population_codes(scoring)]
    if scoring == "continuous-variable":
        return [
            _population("initial-population", row.n),
            _population("measure-population", row.n),
            _population("measure-observation", row.n),
        ]
    return [
        _population("initial-population", row.n),
        _population("numerator", row.numerator),
        _population("denominator", row.denominator),
    ]


def _score_of(kpi: KpiDefinition, row: ReportRow | None) -> dict[str, Any] | None:
    if row is None or row.value is None:
        return None
    return {"value": round(row.value, 6), "unit": kpi.unit, "system": UCUM, "code": ucum_code(kpi.unit)}


def measure_report(
    kpi: KpiDefinition,
    measure_url: str,
    start: datetime,
    end: datetime,
    facility_rows: Sequence[ReportRow],
    unit_rows: Sequence[ReportRow],
    now: datetime,
    hidden: Callable[[ReportRow], bool] = lambda _: False,
) -> dict[str, Any]:
    """facility_rows and unit_rows: the period report by facility and by unit. A row `hidden`
    says is suppressed (small cells, for viewers) is reported without counts and score."""
    scoring = scoring_of(kpi)

    def _populations(scoring: str, row: ReportRow | None) -> list[dict[str, Any]]:
        if row is not None and hidden(row):
            return [_population(code, None) for code in _population_codes(scoring)]
        return _counts(scoring, row)

    def _score(kpi: KpiDefinition, row: ReportRow | None) -> dict[str, Any] | None:
        return None if row is not None and hidden(row) else _score_of(kpi, row)

    facilities = sorted({r.group.facility for r in (*facility_rows, *unit_rows)})
    groups = []
    for facility in facilities:
        total = next((r for r in facility_rows if r.group.facility == facility), None)
        group: dict[str, Any] = {
            "code": {"coding": [{"system": FACILITY_SYSTEM, "code": facility}], "text": facility},
            "population": _populations(scoring, total),
        }
        score = _score(kpi, total)
        if score is not None:
            group["measureScore"] = score
        strata = []
        for row in unit_rows:
            if row.group.facility != facility or row.group.unit is None:
                continue
            stratum: dict[str, Any] = {
                "value": {
                    "coding": [{"system": UNIT_SYSTEM, "code": row.group.unit}],
                    "text": row.group.unit,
                },
                "population": _populations(scoring, row),
            }
            unit_score = _score(kpi, row)
            if unit_score is not None:
                stratum["measureScore"] = unit_score
            strata.append(stratum)
        group["stratifier"] = [{"code": [{"text": "unit"}], "stratum": strata}]
        groups.append(group)
    if not groups:  # nothing observed in the period: zero counts, no score
        groups.append({"population": _populations(scoring, None)})
    report: dict[str, Any] = {
        "resourceType": "MeasureReport",
        "status": "complete",
        "type": "summary",
        "measure": measure_url,
        "date": now.isoformat(),
        "period": {"start": start.isoformat(), "end": end.isoformat()},
        "group": groups,
    }
    if len(facilities) == 1:
        report["reporter"] = {
            "identifier": {"system": FACILITY_SYSTEM, "value": facilities[0]},
            "display": facilities[0],
        }
    return report
