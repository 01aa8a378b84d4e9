"""One canonical vocabulary for the coded fields every source must mean the same by.

HL7 v2, FHIR, the feeds and the MIMIC import each translate their own codes into these
words, so a KPI's `where: {patient_class: inpatient}` selects the same patients whatever
sent them; KPI definitions are checked against these lists when they load.

Sources:
- patient class: HL7 table 0004 (PV1-2) and FHIR v3-ActCode encounter classes; observation
  is not a class in table 0004, so HL7 sites mark it in PV1-18 patient type (see HL7_OBSERVATION_TYPES).
- discharge disposition: NUBC UB-04 form locator 17 patient discharge status, which US sites
  send in PV1-36 (HL7 table 0112 is user-defined and carries these codes); FHIR's
  discharge-disposition codes are translated to the nearest NUBC code.
- order priority: HL7 table 0027 (TQ1-9 / ORC-7.6) and FHIR request-priority.
- staff roles: the staffing feed's roles, with the California Title 22 §70217 rule for who
  counts in a licensed nurse-to-patient ratio.
- patient experience: the HCAHPS survey items, their domains (measures), answer scales and
  top box, in engine/hcahps.py (feeds and FHIR QuestionnaireResponse both score with it).
"""

from __future__ import annotations

from typing import Annotated, Final

from pydantic import AfterValidator

from engine.hcahps_survey import DOMAINS as HCAHPS_DOMAINS
from engine.hcahps_survey import ITEMS as HCAHPS_ITEMS

# -- patient class ---------------------------------------------------------------------------
PATIENT_CLASSES: Final = frozenset(
    {
        "inpatient",
        "observation",
        "emergency",
        "outpatient",
        "preadmit",
        "recurring",
        "obstetrics",
        "newborn",
        "commercial",
        "not_applicable",
        "unknown",
        "home_health",
        "virtual",
    }
)

HL7_PATIENT_CLASS: Final = {
    "I": "inpatient",
    "E": "emergency",
    "O": "outpatient",
    "P": "preadmit",
    "R": "recurring",
    "B": "obstetrics",
    "C": "commercial",
    "N": "not_applicable",
    "U": "unknown",
}

HL7_OBSERVATION_TYPES: Final = frozenset({"OBS", "OBV", "OBSERVATION"})
"""PV1-18 patient types that make a PV1-2 outpatient (or inpatient) stay an observation stay."""

FHIR_ENCOUNTER_CLASS: Final = {
    "IMP": "inpatient",
    "ACUTE": "inpatient",
    "NONAC": "inpatient",
    "OBSENC": "observation",
    "EMER": "emergency",
    "AMB": "outpatient",
    "SS": "outpatient",
    "FLD": "outpatient",
    "HH": "home_health",
    "VR": "virtual",
    "PRENC": "preadmit",
}

CENSUS_CLASSES: Final = ("inpatient", "observation", "obstetrics", "newborn")
"""Who is in the census behind patient-days by default: NDNQI patient days count inpatients and
short-stay/observation patients on inpatient units (carescore.yaml `census.patient_classes`)."""


def known_patient_classes(value: list[str]) -> list[str]:
    """Validator for settings and KPI fields that list patient classes."""
    unknown = sorted(set(value) - PATIENT_CLASSES)
    if unknown:
        raise ValueError(f"unknown patient class {unknown[0]!r}; known: {', '.join(sorted(PATIENT_CLASSES))}")
    return value


PatientClassList = Annotated[list[str], AfterValidator(known_patient_classes)]


def hl7_patient_class(pv1_2: str, pv1_18: str = "") -> str | None:
    """PV1-2 (and PV1-18 for observation) -> canonical class; unknown codes stay as sent."""
    if pv1_18.upper() in HL7_OBSERVATION_TYPES:
        return "observation"
    if not pv1_2:
        return None
    return HL7_PATIENT_CLASS.get(pv1_2.upper(), pv1_2.lower())


# -- discharge disposition (NUBC patient discharge status) -----------------------------------
DISPOSITIONS: Final = {
    "01": "home or self care",
    "02": "short-term general hospital for inpatient care",
    "03": "skilled nursing facility",
    "04": "intermediate care facility",
    "05": "designated cancer center or children's hospital",
    "06": "home under care of a home health organisation",
    "07": "left against medical advice",
    "09": "admitted as an inpatient to this hospital",
    "20": "expired",
    "21": "court or law enforcement",
    "30": "still a patient",
    "40": "expired at home (hospice)",
    "41": "expired in a medical facility (hospice)",
    "42": "expired, place unknown (hospice)",
    "43": "federal health care facility",
    "50": "hospice, home",
    "51": "hospice, medical facility",
    "61": "swing bed",
    "62": "inpatient rehabilitation facility",
    "63": "long-term care hospital",
    "64": "nursing facility (Medicaid, not Medicare)",
    "65": "psychiatric hospital or unit",
    "66": "critical access hospital",
    "69": "designated disaster alternative care site",
    "70": "another type of health care institution",
    "81": "home or self care, planned acute readmission",
    "82": "short-term general hospital, planned acute readmission",
    "83": "skilled nursing facility, planned acute readmission",
    "84": "intermediate care facility, planned acute readmission",
    "85": "cancer center or children's hospital, planned acute readmission",
    "86": "home health, planned acute readmission",
    "87": "court or law enforcement, planned acute readmission",
    "88": "federal health care facility, planned acute readmission",
    "89": "swing bed, planned acute readmission",
    "90": "inpatient rehabilitation facility, planned acute readmission",
    "91": "long-term care hospital, planned acute readmission",
    "92": "nursing facility, planned acute readmission",
    "93": "psychiatric hospital, planned acute readmission",
    "94": "critical access hospital, planned acute readmission",
    "95": "another institution, planned acute readmission",
    "LWBS": "left the ED without being seen (not a NUBC status: ED tracking systems send it)",
}
LWBS_CODES: Final = frozenset({"LWBS", "LWOBS", "LWOB"})
"""What senders put in PV1-36 (or FHIR dischargeDisposition) for a patient who left the ED
before a provider saw them (CMS OP-22); all become LWBS."""

DIED: Final = frozenset({"20", "40", "41", "42"})
LEFT_AMA: Final = frozenset({"07"})
TRANSFER_ACUTE: Final = frozenset({"02", "05", "43", "66", "82", "85", "88", "94"})
"""To another acute care hospital: not an index discharge (CMS hospital-wide readmission)."""

FHIR_DISPOSITION: Final = {
    "home": "01",
    "alt-home": "01",
    "other-hcf": "70",
    "hosp": "50",
    "long": "63",
    "aadvice": "07",
    "exp": "20",
    "psy": "65",
    "rehab": "62",
    "snf": "03",
    "oth": "70",
}


def hl7_disposition(code: str) -> str | None:
    """PV1-36 -> NUBC code ('1' and '01' are the same status); other codes stay as sent."""
    code = code.strip()
    if not code:
        return None
    if code.isdigit() and len(code) == 1:
        code = "0" + code
    if code.upper() in LWBS_CODES:
        return "LWBS"
    return code


def fhir_disposition(code: str) -> str:
    return FHIR_DISPOSITION.get(code, hl7_disposition(code) or code)


# -- order priority --------------------------------------------------------------------------
PRIORITIES: Final = frozenset({"stat", "asap", "routine", "preop", "callback", "timing"})
HL7_PRIORITY: Final = {"S": "stat", "A": "asap", "R": "routine", "P": "preop", "C": "callback", "T": "timing"}
FHIR_PRIORITY: Final = {"stat": "stat", "asap": "asap", "urgent": "asap", "routine": "routine"}


# -- staff roles -----------------------------------------------------------------------------
ROLE_ALIASES: Final = {
    "registered_nurse": "rn",
    "nurse": "rn",
    "lvn": "lpn",
    "licensed_vocational_nurse": "lpn",
    "licensed_practical_nurse": "lpn",
    "charge_rn": "charge_nurse",
    "charge": "charge_nurse",
    "triage_rn": "triage_nurse",
    "np": "aprn",
    "cns": "aprn",
    "crna": "aprn",
    "cnm": "aprn",
    "psych_technician": "psych_tech",
    "nurse_aide": "cna",
    "nursing_assistant": "cna",
    "certified_nursing_assistant": "cna",
    "uap": "cna",
    "pca": "cna",
    "patient_care_assistant": "cna",
    "hca": "cna",
    "mental_health_tech": "psych_tech",
    "mental_health_technician": "psych_tech",
}

LICENSED_ROLES: Final = frozenset(
    {"rn", "lpn", "psych_tech", "charge_nurse", "triage_nurse", "aprn", "nurse_manager", "house_supervisor"}
)
"""Licensed nurses (RN, LPN/LVN, advanced practice, psychiatric technicians in psychiatric units)."""

DIRECT_CARE_ROLES: Final = frozenset({"rn", "lpn", "psych_tech"})
"""Counted in a licensed nurse-to-patient ratio by default. Title 22 §70217(a): nurse
administrators, supervisors, managers and charge nurses count only while they have a patient
assignment; triage and advanced-practice nurses are not in the unit's direct care. A roster row
can say `direct_care: true` for a charge nurse who takes patients."""

REGISTERED_NURSE_ROLES: Final = frozenset({"rn", "charge_nurse", "triage_nurse", "aprn", "nurse_manager"})
"""Registered nurses for headcount, turnover and certification (an RN licence, whatever the job)."""

DIRECT_CARE_RN_ROLES: Final = REGISTERED_NURSE_ROLES & DIRECT_CARE_ROLES
"""Direct-care RNs: the population of certified % (NDNQI / Magnet report certification among
direct-care RNs, nurse leaders separately) and of the RN vacancy rate's filled positions."""

NURSING_CARE_ROLES: Final = frozenset({"rn", "lpn", "psych_tech", "cna"})
"""Nursing staff with direct patient care responsibilities whose productive hours count in
nursing hours per patient day (NQF #0205 / NDNQI: RN, LPN/LVN and unlicensed assistive personnel
such as nursing assistants and mental health technicians; unit managers, clerks and charge
nurses without an assignment are not)."""

STAFF_ROLES: Final = LICENSED_ROLES | {"cna", "tech", "clerk", "physician", "other"}
"""Every role the staffing and HR feeds name (after canonical_role)."""


# -- finance ---------------------------------------------------------------------------------
COST_CATEGORIES: Final = frozenset({"labour", "supplies", "procedure", "other"})
"""Operating expense lines (finance.cost): every one is an operating expense."""

REVENUE_CATEGORIES: Final = frozenset(
    {"net_patient_service", "other_operating", "non_operating", "gross_inpatient", "gross_outpatient"}
)
"""Revenue lines (finance.revenue). Operating revenue = net patient service revenue + other
operating revenue (the "patient care and other operations" definition of operating margin);
non-operating revenue (investment income, gifts) is outside it. Gross inpatient and outpatient
revenue are charges at the hospital's full established rates: not revenue earned, but the split
the AHA outpatient adjustment (adjusted patient days) is computed from."""

OPERATING_REVENUE: Final = ("net_patient_service", "other_operating")
GROSS_PATIENT_REVENUE: Final = ("gross_inpatient", "gross_outpatient")


# -- patient safety --------------------------------------------------------------------------
FALL_INJURY_LEVELS: Final = frozenset({"none", "minor", "moderate", "major", "death"})
"""NDNQI fall injury levels. A fall with injury is minor or worse; "unknown" is kept for a
fall whose injury level is not (yet) assessed: it is a fall, not an injury fall."""

INJURY_FALL_LEVELS: Final = ("minor", "moderate", "major", "death")

PRESSURE_INJURY_STAGES: Final = frozenset({"1", "2", "3", "4", "unstageable", "dti"})
"""NPIAP pressure injury stages: 1 to 4, unstageable (obscured full-thickness loss) and dti
(deep tissue pressure injury). Stages are strings, so a KPI writes `stage: ["2", "3"]`."""

HAPI_STAGES: Final = ("2", "3", "4", "unstageable", "dti")
"""The stages NDNQI's hospital-acquired pressure injury measure counts (stage 2 and above)."""


def canonical_role(role: str) -> str:
    role = role.strip().lower().replace(" ", "_").replace("-", "_")
    return ROLE_ALIASES.get(role, role)


VOCABULARIES: Final[dict[tuple[str, str], frozenset[str]]] = {
    ("encounter", "patient_class"): PATIENT_CLASSES,
    ("encounter", "disposition"): frozenset(DISPOSITIONS),
    ("lab", "priority"): PRIORITIES,
    ("staffing", "role"): STAFF_ROLES,
    ("hr", "role"): STAFF_ROLES,
    ("finance", "category"): COST_CATEGORIES | REVENUE_CATEGORIES | {"charge"},
    ("quality", "injury"): FALL_INJURY_LEVELS | {"unknown"},
    ("quality", "stage"): PRESSURE_INJURY_STAGES,
    ("experience", "item"): frozenset(HCAHPS_ITEMS),  # HCAHPS items: engine/hcahps.py
    ("experience", "domain"): frozenset(HCAHPS_DOMAINS),
}
"""(event family, field) -> the values KPI `where:` clauses may use."""
