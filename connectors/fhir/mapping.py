"""FHIR R4 resources -> canonical events.

A FHIR resource is a snapshot, sent again whenever it changes, so each event's source_id
is derived from the resource, the kind of event and its time: the same admission in ten
versions of an Encounter is stored once. What maps to what:

- Encounter: period.start -> admit (inpatient) or register (emergency/outpatient); each
  later location[].period.start -> transfer; status finished + period.end -> discharge
  (hospitalization.dischargeDisposition); cancelled / entered-in-error -> cancel_admit.
- ServiceRequest (a laboratory order): authoredOn -> lab.order (priority), revoked -> lab.cancel.
- Specimen: collection -> lab.collect, receivedTime -> lab.receive (request -> the order).
- DiagnosticReport / Observation (basedOn ServiceRequest, final|corrected|amended, issued)
  -> lab.result. Orders are keyed "ServiceRequest/<id>". Specimens and results take the
  priority and place of the ServiceRequest they name (connectors/orders.py), when it was
  received before them (or in the same Bundle).
- Procedure (completed) -> procedure.performed; ChargeItem (priceOverride) and Claim
  (total) -> finance.charge.
- QuestionnaireResponse of an experience questionnaire -> experience.survey per answer;
  HCAHPS items (by linkId) scored on their own scale (engine/hcahps.py), one survey per response.
- Task / Communication with a nurse-call code -> nursecall placed / acknowledged / ended /
  cancelled (see _Task: a completed call is a response, not a withdrawal); its encounter ->
  encounter_id, so a call without a location counts at the encounter's unit (engine/stays.py).
- Location of physical type bed -> bed.status (operationalStatus: closed beds leave the
  staffed-bed count).
Other resource types carry no KPI data: inside a Bundle they are skipped and reported.
"""

from __future__ import annotations

from connectors.fhir.base import ResourceMapper, codes, ref_id
from connectors.fhir.billing import Billing
from connectors.fhir.encounters import Encounters
from connectors.fhir.experience import Experience
from connectors.fhir.labs import Labs
from connectors.fhir.nursing import Nursing

__all__ = ["FHIRMapper", "ResourceMapper", "codes", "ref_id"]


class FHIRMapper(Encounters, Labs, Billing, Experience, Nursing):
    """Every resource type's mapping (the families' `_<resourceType>` methods)."""
