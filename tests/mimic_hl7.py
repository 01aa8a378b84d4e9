"""The MIMIC-IV demo as an HL7 v2 feed, written the way a hospital interface engine sends it.

Test-side only. The message text is formatted here by hand, segment by segment, from the HL7
v2.5.1 standard (chapter 3 ADT, chapter 4 orders, chapter 7 results); nothing is taken from
connectors/hl7v2/messages.py or any other carescore module, so the builder and the mapper
under test share no assumptions. The data is read from ../shared/testdata (never copied).

What becomes what
-----------------
hosp/admissions.csv.gz, one row per hospital stay (hadm_id):
  * ADT^A01 at `admittime`: PID-3 subject_id, PV1-19 hadm_id, PV1-3 the careunit the patient is
    in at that moment (hosp/transfers: often still the ED, boarding), PV1-44 admittime.
    PV1-2 from `admission_type` (see OBSERVATION_TYPES): observation types are PV1-2 "O" with
    PV1-18 "OBS" (HL7 table 0004 has no observation class; engine/vocabulary.py
    hl7_patient_class reads PV1-18), every other type PV1-2 "I".
  * ADT^A03 at `dischtime`: PV1-3 the unit the patient leaves from, PV1-36 the NUBC patient
    discharge status from `discharge_location` (NUBC table below), PV1-44/PV1-45.
hosp/transfers.csv.gz, the bed moves:
  * ADT^A02 at `intime` of every move to another careunit during the stay: PV1-3 the new
    careunit, PV1-6 the prior one.
  * ED rows: ADT^A04 (register, PV1-2 "E") at the ED arrival. For a stay that began in the ED
    the visit number is the stay's hadm_id, so the later A01 turns it into an admission; an ED
    visit that was never admitted (hadm_id empty) gets its own visit number "ED<transfer_id>"
    and an A03 when it leaves the ED. Neither is an inpatient admission: they must count in
    no length of stay and no readmission.
hosp/labevents.csv.gz, one row per test result:
  * ORM^O01 (ORC-1 NW) per specimen, one ORC/OBR pair per test: ORC-2 placer order number
    "L<labevent_id>", ORC-9 and OBR-6 the order time, OBR-7 the collection time, priority
    STAT -> "S", ROUTINE -> "R" in TQ1-9 (v2.5 style) for even specimen ids and in ORC-7.6 (the
    older quantity/timing field) for odd ones, so both ways a sender says it are exercised.
  * ORU^R01 per specimen and `storetime`: the tests stored at that moment, OBR-22 = storetime,
    OBR-25 "F", one OBX each.
  * messages(data, orders="specimen") (the MLLP benchmark's second feed, shaped as the issue's
    replay: about two events a message): one ORC/OBR per specimen instead, its placer number
    that of the specimen's first test, OBR-4 SPECIMEN_SERVICE, the tests as OBX segments, and
    OBR-25 "A" (HL7 table 0123: some, not all, results available) in each ORU^R01 before the
    specimen's last store time, "F" in the last. The KPIs differ between the two shapes: a lab
    turnaround is then one per specimen, ending at its last store time, not one per test.
  MIMIC-IV has no order time and no specimen receipt time for a lab test: `charttime` is
  "the time at which the specimen was acquired" and `storetime` "the time at which the
  measurement was made available" (MIMIC-IV hosp/labevents documentation). So ORC-9/OBR-6 =
  OBR-7 = charttime and OBR-14 is left empty: the order-to-report turnaround measured here is
  in fact collection-to-report, the closest interval MIMIC records.
  Tests without a priority (`priority` empty: 9,329 rows, all of them blood gases, d_labitems
  category "Blood Gas") come from the blood gas analysers, which send results through their
  middleware without a CPOE order: they are sent as unsolicited ORU^R01 only (no ORM), so they
  have no order time and are in no order-to-result turnaround. Tests never resulted
  (`storetime` empty) get their ORM and no ORU.

Time
----
MIMIC shifts every patient's dates by its own offset into 2110-2210. Each patient is shifted
again here by a whole number of days so that the patient's last event falls on one of the
24 days before today (UTC), day 1 + subject_id % 24: the replay ends within the last 25 days
and nothing is in the future. Whole days keep every interval and every UTC calendar-date
difference (the readmission rule counts calendar days). MIMIC times are local times without a
zone; they are sent as UTC (+0000), so the UTC dates here are MIMIC's dates.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime
from functools import lru_cache
from pathlib import Path
from typing import Any

import polars as pl

FACILITY = "MIMIC"
SENDER = "MIMICEMR"
RECEIVER = "CARESCORE"
VERSION = "2.5.1"

# -- careunits as units ------------------------------------------------------------------------
# careunit (hosp/transfers) -> (unit code sent in PV1-3.1, unit type, department).
# Unit types are the ones the nurse-ratio KPIs know (22 CCR §70217 categories): intensive care
# units 'icu', intermediate/step-down 'step_down', the ED and its observation area 'ed', PACU
# 'pacu', psychiatry 'psych', oncology 'specialty', the rest medical/surgical wards 'med_surg'.
CAREUNITS: dict[str, tuple[str, str, str]] = {
    "Medical Intensive Care Unit (MICU)": ("MICU", "icu", "critical_care"),
    "Surgical Intensive Care Unit (SICU)": ("SICU", "icu", "critical_care"),
    "Medical/Surgical Intensive Care Unit (MICU/SICU)": ("MSICU", "icu", "critical_care"),
    "Cardiac Vascular Intensive Care Unit (CVICU)": ("CVICU", "icu", "critical_care"),
    "Coronary Care Unit (CCU)": ("CCU", "icu", "critical_care"),
    "Trauma SICU (TSICU)": ("TSICU", "icu", "critical_care"),
    "Neuro Surgical Intensive Care Unit (Neuro SICU)": ("NSICU", "icu", "critical_care"),
    "Neuro Stepdown": ("NSTEP", "step_down", "critical_care"),
    "Neuro Intermediate": ("NINT", "step_down", "critical_care"),
    "Hematology/Oncology Intermediate": ("HOINT", "step_down", "medicine"),
    "Medicine/Cardiology Intermediate": ("MCINT", "step_down", "medicine"),
    "Cardiology Surgery Intermediate": ("CSINT", "step_down", "surgery"),
    "Emergency Department": ("ED", "ed", "emergency"),
    "Emergency Department Observation": ("EDOBS", "ed", "emergency"),
    "PACU": ("PACU", "pacu", "surgery"),
    "Psychiatry": ("PSY", "psych", "medicine"),
    "Hematology/Oncology": ("HONC", "specialty", "medicine"),
    "Medicine": ("MED", "med_surg", "medicine"),
    "Medicine/Cardiology": ("MEDCARD", "med_surg", "medicine"),
    "Cardiology": ("CARD", "med_surg", "medicine"),
    "Neurology": ("NEURO", "med_surg", "medicine"),
    "Observation": ("OBSU", "med_surg", "medicine"),
    "Discharge Lounge": ("DCL", "med_surg", "medicine"),
    "Unknown": ("UNK", "med_surg", "medicine"),
    "Med/Surg": ("MS", "med_surg", "surgery"),
    "Med/Surg/GYN": ("MSGYN", "med_surg", "surgery"),
    "Med/Surg/Trauma": ("MSTR", "med_surg", "surgery"),
    "Surgery/Trauma": ("SURGTR", "med_surg", "surgery"),
    "Cardiac Surgery": ("CSURG", "med_surg", "surgery"),
    "Transplant": ("TRANSPL", "med_surg", "surgery"),
    "Vascular": ("VASC", "med_surg", "surgery"),
}

# -- admission types ---------------------------------------------------------------------------
# How MIMIC-IV's nine admission_type values split (counted in the demo's admissions.csv):
#   EU OBSERVATION 30, DIRECT OBSERVATION 7, AMBULATORY OBSERVATION 5: observation stays. Their
#     length of stay is about a day (mean 0.9 / 1.4 / 1.0 days, none over 3), and MIMIC records
#     no discharge_location for any of them (42 of 42 empty): they are outpatient stays in
#     observation status, never admitted.
#   OBSERVATION ADMIT 45: despite the name, inpatient admissions (admitted after a period of
#     observation): mean stay 8.2 days (max 30), 23 ICU careunit stays among their transfers,
#     and every one has a discharge_location (died, SNF, rehab, home ...), as the inpatient
#     types do.
#   EW EMER. 104, URGENT 38, SURGICAL SAME DAY ADMISSION 18, DIRECT EMER. 15, ELECTIVE 13:
#     inpatient.
# So 233 inpatient stays and 42 observation stays.
OBSERVATION_TYPES = frozenset({"EU OBSERVATION", "DIRECT OBSERVATION", "AMBULATORY OBSERVATION"})
INPATIENT_TYPES = frozenset(
    {"OBSERVATION ADMIT", "EW EMER.", "URGENT", "SURGICAL SAME DAY ADMISSION", "DIRECT EMER.", "ELECTIVE"}
)
# PV1-4 admission type, HL7 table 0007 (E emergency, U urgent, C elective)
ADMISSION_TYPE_0007 = {
    "EW EMER.": "E",
    "DIRECT EMER.": "E",
    "URGENT": "U",
    "ELECTIVE": "C",
    "SURGICAL SAME DAY ADMISSION": "C",
    "OBSERVATION ADMIT": "E",
    "EU OBSERVATION": "E",
    "DIRECT OBSERVATION": "U",
    "AMBULATORY OBSERVATION": "C",
}

# -- discharge_location -> NUBC patient discharge status (UB-04 form locator 17, sent in PV1-36)
# Code meanings from the NUBC UB-04 manual (FL 17 "Patient Discharge Status"):
#   HOME                          01 discharged to home or self care (routine discharge)
#   ASSISTED LIVING               01 NUBC/CMS count assisted living as home (not in the demo)
#   HOME HEALTH CARE              06 discharged to home under the care of an organised home
#                                    health service organisation
#   SKILLED NURSING FACILITY      03 discharged to a skilled nursing facility (SNF) with
#                                    Medicare certification
#   REHAB                         62 discharged to an inpatient rehabilitation facility (IRF)
#                                    or rehabilitation distinct part unit of a hospital
#   CHRONIC/LONG TERM ACUTE CARE  63 discharged to a Medicare-certified long term care hospital
#                                    (LTCH): not a short-term acute hospital, so not an acute
#                                    transfer for the readmission cohort
#   PSYCH FACILITY                65 discharged to a psychiatric hospital or psychiatric
#                                    distinct part unit of a hospital
#   HOSPICE                       50 hospice - home. MIMIC does not say home or facility
#                                    (51); both are alive discharges, neither is excluded from
#                                    the readmission cohort, so the choice changes no KPI
#   ACUTE HOSPITAL                02 discharged/transferred to a short-term general hospital
#                                    for inpatient care (excluded from the index cohort)
#   AGAINST ADVICE                07 left against medical advice or discontinued care
#                                    (excluded from the index cohort)
#   DIED                          20 expired (excluded from the index cohort)
#   OTHER FACILITY / HEALTHCARE FACILITY
#                                 70 discharged to another type of health care institution
#                                    not defined elsewhere (not in the demo)
#   (empty)                       PV1-36 empty: MIMIC records none for observation stays
NUBC: dict[str, str] = {
    "HOME": "01",
    "ASSISTED LIVING": "01",
    "HOME HEALTH CARE": "06",
    "SKILLED NURSING FACILITY": "03",
    "REHAB": "62",
    "CHRONIC/LONG TERM ACUTE CARE": "63",
    "PSYCH FACILITY": "65",
    "HOSPICE": "50",
    "ACUTE HOSPITAL": "02",
    "AGAINST ADVICE": "07",
    "DIED": "20",
    "OTHER FACILITY": "70",
    "HEALTHCARE FACILITY": "70",
}

PRIORITY_0027 = {"STAT": "S", "ROUTINE": "R"}  # HL7 table 0027 priority
SPECIMEN_SERVICE = "SPECIMEN^Tests of one specimen^MIMICLAB"  # OBR-4 of an order per specimen


# -- reading and shifting ----------------------------------------------------------------------
LAB_COLUMNS = {
    "labevent_id": pl.Int64,
    "subject_id": pl.Int64,
    "hadm_id": pl.Int64,
    "specimen_id": pl.Int64,
    "itemid": pl.Int64,
    "charttime": pl.Datetime("us"),
    "storetime": pl.Datetime("us"),
    "value": pl.String,
    "valuenum": pl.Float64,
    "valueuom": pl.String,
    "priority": pl.String,
}


def read(folder: Path, name: str) -> pl.DataFrame:
    path = folder / "hosp" / f"{name}.csv.gz"
    if name == "labevents":  # 107,727 rows: read only what is used, types given
        return pl.read_csv(path, columns=list(LAB_COLUMNS), schema_overrides=LAB_COLUMNS)
    return pl.read_csv(path, try_parse_dates=True, infer_schema_length=None)


@dataclass(frozen=True)
class Mimic:
    """The demo's tables with every patient's times shifted (see the module docstring)."""

    admissions: pl.DataFrame
    transfers: pl.DataFrame
    labevents: pl.DataFrame
    patients: pl.DataFrame
    shifts: pl.DataFrame  # subject_id, days
    today: date


ADMISSION_TIMES = ("admittime", "dischtime", "deathtime", "edregtime", "edouttime")


def load(folder: Path, today: date | None = None) -> Mimic:
    """The demo's admissions, transfers and lab events, each patient shifted by whole days so
    that the patient's last event falls on day 1 + subject_id % 24 before `today` (UTC)."""
    today = today or datetime.now(UTC).date()
    adm = read(folder, "admissions")
    tr = read(folder, "transfers")
    lab = read(folder, "labevents")
    patients = read(folder, "patients")
    times = [adm.select("subject_id", pl.col(c).alias("t")) for c in ADMISSION_TIMES]
    times += [tr.select("subject_id", pl.col(c).alias("t")) for c in ("intime", "outtime")]
    times += [lab.select("subject_id", pl.col(c).alias("t")) for c in ("charttime", "storetime")]
    last = pl.concat(times).drop_nulls().group_by("subject_id").agg(pl.col("t").max().alias("last"))
    shifts = last.with_columns(
        days=(
            pl.lit(today) - pl.duration(days=1 + pl.col("subject_id") % 24) - pl.col("last").dt.date()
        ).dt.total_days()
    ).select("subject_id", "days")

    def shifted(frame: pl.DataFrame, columns: tuple[str, ...]) -> pl.DataFrame:
        frame = frame.join(shifts, on="subject_id", how="left")
        return frame.with_columns(
            [(pl.col(c) + pl.duration(days=pl.col("days"))).alias(c) for c in columns]
        ).drop("days")

    return Mimic(
        admissions=shifted(adm, ADMISSION_TIMES),
        transfers=shifted(tr, ("intime", "outtime")),
        labevents=shifted(lab, ("charttime", "storetime")),
        patients=patients,
        shifts=shifts,
        today=today,
    )


# -- places ------------------------------------------------------------------------------------
def places_config() -> dict[str, Any]:
    """carescore `places`: the MIMIC careunits as units of one facility."""
    departments: dict[str, list[dict[str, Any]]] = {}
    for name, (code, kind, department) in CAREUNITS.items():
        departments.setdefault(department, []).append({"id": code, "name": name, "type": kind, "beds": 20})
    return {
        "default_facility": FACILITY,
        "facilities": [
            {
                "id": FACILITY,
                "name": "MIMIC-IV demo hospital",
                "departments": [{"id": d, "units": units} for d, units in departments.items()],
            }
        ],
    }


def unit_of(careunit: str | None) -> str | None:
    if careunit is None:
        return None
    return CAREUNITS[careunit][0]


# -- HL7 text ----------------------------------------------------------------------------------
@lru_cache(maxsize=200_000)
def ts(value: datetime) -> str:
    """HL7 DTM with an explicit UTC offset: YYYYMMDDHHMMSS+0000."""
    return value.strftime("%Y%m%d%H%M%S") + "+0000"


def segment(name: str, fields: dict[int, str]) -> str:
    """A segment from {field number: value}; fields in between are empty. MSH is special:
    MSH-1 is the field separator itself, so MSH-2 is the first thing after the name."""
    top = max(fields)
    if name == "MSH":
        values = [fields.get(i, "") for i in range(2, top + 1)]
        return "MSH|" + "|".join(values)
    values = [fields.get(i, "") for i in range(1, top + 1)]
    return name + "|" + "|".join(values)


def escape(text: str) -> str:
    """HL7 escape sequences for the delimiters (section 2.7)."""
    return (
        text.replace("\\", "\\E\\")
        .replace("|", "\\F\\")
        .replace("^", "\\S\\")
        .replace("&", "\\T\\")
        .replace("~", "\\R\\")
    )


class Builder:
    """Numbers the messages (MSH-10) and formats them."""

    def __init__(self) -> None:
        self.count = 0

    def msh(self, when: datetime, message_type: str) -> str:
        self.count += 1
        return segment(
            "MSH",
            {
                2: "^~\\&",
                3: SENDER,
                4: FACILITY,
                5: RECEIVER,
                6: FACILITY,
                7: ts(when),
                9: message_type,
                10: f"MIMIC{self.count:08d}",
                11: "P",
                12: VERSION,
            },
        )

    @staticmethod
    def pid(subject_id: int, sex: str | None) -> str:
        return segment(
            "PID",
            {1: "1", 3: f"{subject_id}^^^MIMIC^MR", 5: f"MIMIC^{subject_id}", 8: sex or "U"},
        )

    @staticmethod
    def pv1(
        patient_class: str,
        unit: str | None,
        visit: str,
        *,
        patient_type: str = "",
        prior_unit: str | None = None,
        admission_type: str = "",
        disposition: str = "",
        admitted: datetime | None = None,
        discharged: datetime | None = None,
    ) -> str:
        fields = {1: "1", 2: patient_class, 19: f"{visit}^^^{FACILITY}^VN"}
        if unit:
            fields[3] = f"{unit}^^^{FACILITY}"
        if admission_type:
            fields[4] = admission_type
        if prior_unit:
            fields[6] = f"{prior_unit}^^^{FACILITY}"
        if patient_type:
            fields[18] = patient_type
        if disposition:
            fields[36] = disposition
        if admitted is not None:
            fields[44] = ts(admitted)
        if discharged is not None:
            fields[45] = ts(discharged)
        return segment("PV1", fields)

    def adt(self, trigger: str, when: datetime, pid: str, pv1: str) -> str:
        return "\r".join(
            [
                self.msh(when, f"ADT^{trigger}^ADT_{'A01' if trigger in ('A01', 'A04') else trigger}"),
                segment("EVN", {1: trigger, 2: ts(when), 6: ts(when)}),
                pid,
                pv1,
            ]
        )


@dataclass(frozen=True)
class Message:
    """One message and when the hospital sends it (the event it reports)."""

    at: datetime
    rank: int  # order among messages at the same instant (see RANK)
    text: str
    kind: str


# At one instant a discharge goes out before a new admission (a readmission at the minute of
# the last discharge must find that discharge), registrations and admissions before moves,
# orders before results.
RANK = {"A03": 0, "A04": 1, "A01": 2, "A02": 3, "ORM": 4, "ORU": 5}


def _timeline(transfers: pl.DataFrame) -> dict[int, list[tuple[datetime, str]]]:
    """hadm_id -> [(intime, careunit)] of its ED, admit and transfer rows, by time."""
    rows = (
        transfers.filter(pl.col("hadm_id").is_not_null() & pl.col("careunit").is_not_null())
        .filter(pl.col("eventtype").is_in(["ED", "admit", "transfer"]))
        .sort("hadm_id", "intime", "transfer_id")
    )
    out: dict[int, list[tuple[datetime, str]]] = {}
    for hadm, intime, careunit in rows.select("hadm_id", "intime", "careunit").iter_rows():
        out.setdefault(hadm, []).append((intime, careunit))
    return out


def where_at(timeline: list[tuple[datetime, str]], when: datetime) -> str | None:
    """The careunit at `when`: the last move at or before it (the first one, if none yet)."""
    if not timeline:
        return None
    found = timeline[0][1]
    for intime, careunit in timeline:
        if intime <= when:
            found = careunit
        else:
            break
    return found


def adt_messages(data: Mimic, build: Builder) -> list[Message]:
    out: list[Message] = []
    sex = dict(data.patients.select("subject_id", "gender").iter_rows())
    timelines = _timeline(data.transfers)
    ed_rows = data.transfers.filter(pl.col("eventtype") == "ED").sort("intime")
    for row in data.admissions.sort("admittime").iter_rows(named=True):
        subject, hadm = row["subject_id"], row["hadm_id"]
        admitted, discharged = row["admittime"], row["dischtime"]
        pid = build.pid(subject, sex.get(subject))
        observation = row["admission_type"] in OBSERVATION_TYPES
        assert observation or row["admission_type"] in INPATIENT_TYPES, row["admission_type"]
        klass, ptype = ("O", "OBS") if observation else ("I", "")
        pv1_type = ADMISSION_TYPE_0007.get(row["admission_type"], "")
        timeline = timelines.get(hadm, [])
        # the ED part of the stay, registered before the admission (same visit number)
        eds = ed_rows.filter(pl.col("hadm_id") == hadm)
        if eds.height and eds["intime"][0] < admitted:
            arrived = eds["intime"][0]
            out.append(
                Message(
                    arrived,
                    RANK["A04"],
                    build.adt("A04", arrived, pid, build.pv1("E", "ED", str(hadm), admitted=arrived)),
                    "A04",
                )
            )
        here = unit_of(where_at(timeline, admitted))
        out.append(
            Message(
                admitted,
                RANK["A01"],
                build.adt(
                    "A01",
                    admitted,
                    pid,
                    build.pv1(
                        klass, here, str(hadm), patient_type=ptype, admission_type=pv1_type, admitted=admitted
                    ),
                ),
                "A01",
            )
        )
        for intime, careunit in timeline:
            unit = unit_of(careunit)
            if intime <= admitted or intime >= discharged or unit == here:
                continue
            out.append(
                Message(
                    intime,
                    RANK["A02"],
                    build.adt(
                        "A02",
                        intime,
                        pid,
                        build.pv1(
                            klass,
                            unit,
                            str(hadm),
                            patient_type=ptype,
                            prior_unit=here,
                            admission_type=pv1_type,
                            admitted=admitted,
                        ),
                    ),
                    "A02",
                )
            )
            here = unit
        location = row["discharge_location"]
        disposition = NUBC[location] if location is not None else ""
        out.append(
            Message(
                discharged,
                RANK["A03"],
                build.adt(
                    "A03",
                    discharged,
                    pid,
                    build.pv1(
                        klass,
                        here,
                        str(hadm),
                        patient_type=ptype,
                        admission_type=pv1_type,
                        disposition=disposition,
                        admitted=admitted,
                        discharged=discharged,
                    ),
                ),
                "A03",
            )
        )
    # ED visits never admitted: registered on arrival, discharged when they leave the ED
    for row in ed_rows.filter(pl.col("hadm_id").is_null()).iter_rows(named=True):
        subject, visit = row["subject_id"], f"ED{row['transfer_id']}"
        pid = build.pid(subject, sex.get(subject))
        arrived, left = row["intime"], row["outtime"]
        out.append(
            Message(arrived, RANK["A04"], build.adt("A04", arrived, pid, build.pv1("E", "ED", visit)), "A04")
        )
        out.append(
            Message(
                left,
                RANK["A03"],
                build.adt("A03", left, pid, build.pv1("E", "ED", visit, admitted=arrived, discharged=left)),
                "A03",
            )
        )
    return out


def lab_messages(data: Mimic, build: Builder, orders: str = "test") -> list[Message]:
    """ORM^O01 per specimen at its order time, ORU^R01 per specimen and store time.

    orders "test": one ORC/OBR per test (each a lab order of its own, one OBX each);
    "specimen": one ORC/OBR per specimen (the accession, as a lab system orders a battery),
    its tests as OBX segments, OBR-25 "A" until the specimen's last store time, then "F"."""
    if orders not in ("test", "specimen"):
        raise ValueError(f"orders must be 'test' or 'specimen', not {orders!r}")
    out: list[Message] = []
    sex = dict(data.patients.select("subject_id", "gender").iter_rows())
    timelines = _timeline(data.transfers)
    stays = {
        r["hadm_id"]: r for r in data.admissions.select("hadm_id", "admission_type").iter_rows(named=True)
    }
    labs = data.labevents.sort("charttime", "specimen_id", "labevent_id")

    def patient_visit(subject: int, hadm: int | None, when: datetime) -> tuple[str, str]:
        pid = build.pid(subject, sex.get(subject))
        if hadm is None or hadm not in stays:  # an outpatient test: no stay, no unit
            return pid, segment("PV1", {1: "1", 2: "O"})
        observation = stays[hadm]["admission_type"] in OBSERVATION_TYPES
        unit = unit_of(where_at(timelines.get(hadm, []), when))
        return pid, build.pv1(
            "O" if observation else "I", unit, str(hadm), patient_type="OBS" if observation else ""
        )

    def orc(control: str, row: dict[str, Any], code: str, old_style: bool) -> str:
        fields = {1: control, 2: f"L{row['labevent_id']}^{FACILITY}", 3: f"S{row['specimen_id']}^LAB"}
        if control == "NW":
            fields[5] = "SC"
            fields[9] = ts(row["charttime"])
        if old_style and code:
            fields[7] = f"^^^^^{code}"  # TQ quantity/timing, component 6 priority
        return segment("ORC", fields)

    def obr(i: int, row: dict[str, Any], result: bool, status: str = "F") -> str:
        fields = {
            1: str(i),
            2: f"L{row['labevent_id']}^{FACILITY}",
            3: f"S{row['specimen_id']}^LAB",
            4: f"{row['itemid']}^^MIMICLAB" if orders == "test" else SPECIMEN_SERVICE,
            6: ts(row["charttime"]),
            7: ts(row["charttime"]),
        }
        if result:
            fields[22] = ts(row["storetime"])
            fields[25] = status
        return segment("OBR", fields)

    def tq1(code: str) -> str:
        return segment("TQ1", {1: "1", 9: f"{code}^{'Stat' if code == 'S' else 'Routine'}^HL70027"})

    def obx(i: int, row: dict[str, Any]) -> str:
        value = row["value"]
        numeric = row["valuenum"] is not None
        return segment(
            "OBX",
            {
                1: str(i),
                2: "NM" if numeric else "ST",
                3: f"{row['itemid']}^^MIMICLAB",
                5: escape(str(row["valuenum"] if numeric else (value or ""))),
                6: escape(row["valueuom"] or ""),
                11: "F",
                14: ts(row["charttime"]),
            },
        )

    specimens: list[list[dict[str, Any]]] = []
    for row in labs.iter_rows(named=True):
        if specimens and specimens[-1][0]["specimen_id"] == row["specimen_id"]:
            specimens[-1].append(row)
        else:
            specimens.append([row])
    for rows in specimens:
        first = rows[0]
        specimen, subject, hadm, when = (
            first["specimen_id"],
            first["subject_id"],
            first["hadm_id"],
            first["charttime"],
        )
        priority = first["priority"]
        assert all(r["priority"] == priority and r["charttime"] == when for r in rows), specimen
        code = PRIORITY_0027.get(priority or "", "")
        old_style = specimen % 2 == 1
        pid, pv1 = patient_visit(subject, hadm, when)
        if code:  # an order from CPOE (blood gases without a priority come without one)
            body = [build.msh(when, "ORM^O01^ORM_O01"), pid, pv1]
            for i, row in enumerate(rows if orders == "test" else rows[:1], 1):
                body.append(orc("NW", row, code, old_style))
                if not old_style:
                    body.append(tq1(code))
                body.append(obr(i, row, result=False))
            out.append(Message(when, RANK["ORM"], "\r".join(body), "ORM"))
        stored: dict[datetime, list[dict[str, Any]]] = {}
        for row in rows:
            if row["storetime"] is not None:
                stored.setdefault(row["storetime"], []).append(row)
        times = sorted(stored.items())
        for n, (at, batch) in enumerate(times, 1):
            body = [build.msh(at, "ORU^R01^ORU_R01"), pid, pv1]
            if orders == "specimen":
                body.append(orc("RE", first, code, old_style or not code))
                body.append(obr(1, {**first, "storetime": at}, True, "F" if n == len(times) else "A"))
                if code and not old_style:
                    body.append(tq1(code))
                body.extend(obx(i, row) for i, row in enumerate(batch, 1))
                out.append(Message(at, RANK["ORU"], "\r".join(body), "ORU"))
                continue
            for i, row in enumerate(batch, 1):
                body.append(orc("RE", row, code, old_style or not code))
                body.append(obr(i, row, result=True))
                if code and not old_style:
                    body.append(tq1(code))  # ORU_R01: TIMING_QTY follows OBR
                body.append(obx(1, row))
            out.append(Message(at, RANK["ORU"], "\r".join(body), "ORU"))
    return out


def messages(data: Mimic, orders: str = "test") -> list[Message]:
    """Every message of the replay in the order the hospital sends them (orders: see
    lab_messages)."""
    build = Builder()
    out = adt_messages(data, build) + lab_messages(data, build, orders)
    out.sort(key=lambda m: (m.at, m.rank))
    return out
