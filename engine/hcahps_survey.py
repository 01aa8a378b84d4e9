"""HCAHPS (CAHPS Hospital Survey) as published: the answer scales and their top boxes, the
survey items and the domains (composite measures) they make up. Scoring answers and
domains from this table is engine/hcahps.py.

Sources (CMS, HCAHPS On-Line, hcahpsonline.org):
- Items and numbering: the 29-item HCAHPS Survey used for discharges from 2018 to 2024 (the
  three pain items removed in 2018): 19 items in the publicly reported measures, 3 screeners
  (Q10, Q12, Q15) that route patients past items that do not apply to them, and 7 "About You"
  items (Q23-Q29) used for patient-mix adjustment. Measure -> item mapping as in the HCAHPS
  Star Ratings Technical Notes.
- Top box ("A Note About HCAHPS Boxes", Summary Analyses): "Always" for Communication with
  Nurses and Doctors, Responsiveness, Communication about Medicines, Cleanliness and
  Quietness; "Yes" for Discharge Information; "9" or "10" for the Overall Hospital Rating;
  "Definitely yes" for Recommend the Hospital; "Strongly agree" for Care Transition.
- A composite measure's top-box score is the mean of its items' top-box proportions.

The survey updated for January 2025 discharges (32 items: Q4 and the Care Transition items
Q20-Q22 removed; care coordination, restfulness and information-about-symptoms items added)
is not in this table yet: its new items are stored unscored, and the measures it keeps are
scored from the items listed here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final, Literal

# -- answer scales ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Scale:
    """Response options in the survey's code order (code = position + 1, or the number itself
    for the 0-10 rating) and which of them are the top box."""

    name: str
    options: tuple[str, ...]
    top: frozenset[str]
    numeric: bool = False
    aliases: Mapping[str, str] = field(default_factory=dict)

    def code_of(self, label: str) -> int:
        return int(label) if self.numeric else self.options.index(label) + 1


SCALES: Final = {
    s.name: s
    for s in (
        Scale("often", ("never", "sometimes", "usually", "always"), frozenset({"always"})),
        Scale(
            "rating",
            tuple(str(i) for i in range(11)),
            frozenset({"9", "10"}),
            numeric=True,
        ),
        Scale(
            "recommend",
            ("definitely_no", "probably_no", "probably_yes", "definitely_yes"),
            frozenset({"definitely_yes"}),
            aliases={
                "no_definitely": "definitely_no",
                "no_probably": "probably_no",
                "yes_probably": "probably_yes",
                "yes_definitely": "definitely_yes",
            },
        ),
        Scale(
            "yes_no",
            ("yes", "no"),
            frozenset({"yes"}),
            aliases={"y": "yes", "n": "no", "true": "yes", "false": "no"},
        ),
        Scale(
            "agree",
            ("strongly_disagree", "disagree", "agree", "strongly_agree"),
            frozenset({"strongly_agree"}),
        ),
        Scale(
            "destination",
            ("own_home", "someone_elses_home", "another_health_facility"),
            frozenset(),
            aliases={"home": "own_home", "someone_else_s_home": "someone_elses_home"},
        ),
    )
}


# -- items and domains -----------------------------------------------------------------------
Role = Literal["scored", "screener", "about_you"]


@dataclass(frozen=True)
class Item:
    id: str
    number: int
    """Question number on the 2018-2024 HCAHPS Survey (Q1-Q29)."""
    role: Role
    domain: str | None
    scale: str | None
    text: str
    not_applicable: Mapping[int, str] = field(default_factory=dict)
    """Response codes meaning the item does not apply (not an answer: never counted)."""


@dataclass(frozen=True)
class Domain:
    id: str
    title: str
    cms_id: str
    """The measure's id prefix in CMS Care Compare HCAHPS files (H_COMP_1_A_P: its "Always" share)."""
    top_box: str
    items: tuple[str, ...]


_ITEMS = (
    Item(
        "nurse_courtesy",
        1,
        "scored",
        "nurse_communication",
        "often",
        "nurses treated you with courtesy and respect",
    ),
    Item("nurse_listen", 2, "scored", "nurse_communication", "often", "nurses listened carefully to you"),
    Item(
        "nurse_explain",
        3,
        "scored",
        "nurse_communication",
        "often",
        "nurses explained things in a way you could understand",
    ),
    Item(
        "call_button",
        4,
        "scored",
        "responsiveness",
        "often",
        "after you pressed the call button, you got help as soon as you wanted it",
        {9: "never_pressed_call_button"},
    ),
    Item(
        "doctor_courtesy",
        5,
        "scored",
        "doctor_communication",
        "often",
        "doctors treated you with courtesy and respect",
    ),
    Item("doctor_listen", 6, "scored", "doctor_communication", "often", "doctors listened carefully to you"),
    Item(
        "doctor_explain",
        7,
        "scored",
        "doctor_communication",
        "often",
        "doctors explained things in a way you could understand",
    ),
    Item("room_clean", 8, "scored", "cleanliness", "often", "your room and bathroom were kept clean"),
    Item("quiet_at_night", 9, "scored", "quietness", "often", "the area around your room was quiet at night"),
    Item(
        "needed_toilet_help",
        10,
        "screener",
        None,
        "yes_no",
        "you needed help getting to the bathroom or using a bedpan",
    ),
    Item(
        "toilet_help",
        11,
        "scored",
        "responsiveness",
        "often",
        "you got help in getting to the bathroom or using a bedpan as soon as you wanted",
    ),
    Item(
        "new_medicine", 12, "screener", None, "yes_no", "you were given any medicine you had not taken before"
    ),
    Item(
        "medicine_purpose",
        13,
        "scored",
        "communication_about_medicines",
        "often",
        "staff told you what the medicine was for",
    ),
    Item(
        "medicine_side_effects",
        14,
        "scored",
        "communication_about_medicines",
        "often",
        "staff described possible side effects in a way you could understand",
    ),
    Item(
        "discharge_destination",
        15,
        "screener",
        None,
        "destination",
        "after leaving you went to your own home, someone else's home or another health facility",
    ),
    Item(
        "discharge_help",
        16,
        "scored",
        "discharge_information",
        "yes_no",
        "staff talked with you about whether you would have the help you needed after you left",
    ),
    Item(
        "discharge_symptoms",
        17,
        "scored",
        "discharge_information",
        "yes_no",
        "you got information in writing about what symptoms or health problems to look out for",
    ),
    Item(
        "overall_rating",
        18,
        "scored",
        "overall_rating",
        "rating",
        "rating of this hospital, 0 (worst) to 10 (best)",
    ),
    Item(
        "recommend",
        19,
        "scored",
        "recommend",
        "recommend",
        "you would recommend this hospital to your friends and family",
    ),
    Item(
        "ct_preferences",
        20,
        "scored",
        "care_transition",
        "agree",
        "staff took your and your family's preferences into account in planning your care after",
    ),
    Item(
        "ct_understood_care",
        21,
        "scored",
        "care_transition",
        "agree",
        "you had a good understanding of the things you were responsible for in managing your health",
    ),
    Item(
        "ct_understood_medications",
        22,
        "scored",
        "care_transition",
        "agree",
        "you clearly understood the purpose for taking each of your medications",
        {5: "not_given_medicine_at_discharge"},
    ),
    Item("about_admitted_via_er", 23, "about_you", None, None, "admitted through the emergency room"),
    Item("about_overall_health", 24, "about_you", None, None, "overall health"),
    Item("about_mental_health", 25, "about_you", None, None, "overall mental or emotional health"),
    Item("about_education", 26, "about_you", None, None, "highest grade or level of school completed"),
    Item("about_hispanic", 27, "about_you", None, None, "Spanish, Hispanic or Latino origin or descent"),
    Item("about_race", 28, "about_you", None, None, "race"),
    Item("about_language", 29, "about_you", None, None, "language mainly spoken at home"),
)

ITEMS: Final = {item.id: item for item in _ITEMS}
ITEM_BY_NUMBER: Final = {item.number: item for item in _ITEMS}

DOMAINS: Final = {
    d.id: d
    for d in (
        Domain(
            "nurse_communication",
            "Communication with Nurses",
            "H_COMP_1",
            "Always",
            ("nurse_courtesy", "nurse_listen", "nurse_explain"),
        ),
        Domain(
            "doctor_communication",
            "Communication with Doctors",
            "H_COMP_2",
            "Always",
            ("doctor_courtesy", "doctor_listen", "doctor_explain"),
        ),
        Domain(
            "responsiveness",
            "Responsiveness of Hospital Staff",
            "H_COMP_3",
            "Always",
            ("call_button", "toilet_help"),
        ),
        Domain(
            "communication_about_medicines",
            "Communication about Medicines",
            "H_COMP_5",
            "Always",
            ("medicine_purpose", "medicine_side_effects"),
        ),
        Domain(
            "discharge_information",
            "Discharge Information",
            "H_COMP_6",
            "Yes",
            ("discharge_help", "discharge_symptoms"),
        ),
        Domain(
            "care_transition",
            "Care Transition",
            "H_COMP_7",
            "Strongly agree",
            ("ct_preferences", "ct_understood_care", "ct_understood_medications"),
        ),
        Domain(
            "cleanliness", "Cleanliness of Hospital Environment", "H_CLEAN_HSP", "Always", ("room_clean",)
        ),
        Domain(
            "quietness", "Quietness of Hospital Environment", "H_QUIET_HSP", "Always", ("quiet_at_night",)
        ),
        Domain("overall_rating", "Overall Hospital Rating", "H_HSP_RATING", "9 or 10", ("overall_rating",)),
        Domain("recommend", "Recommend the Hospital", "H_RECMND", "Definitely yes", ("recommend",)),
    )
}

SCORED_ITEMS: Final = frozenset(item.id for item in _ITEMS if item.role == "scored")
