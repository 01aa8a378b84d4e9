"""Which facilities an MLLP sender may send for, from its client certificate.

A listener with a client CA knows who is at the other end: the names in the certificate the
TLS handshake verified (subject CN, subjectAltName values). mllp.client_facilities ties
such names to our facility ids. The receiver checks the facility every event resolved to
(PV1-3.4 or MSH-4, through places), not MSH-4 alone: a sender writes MSH-4 as it likes, and
a message whose MSH-4 names its own site can still carry a location of another.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

SAN_KINDS = ("DNS", "email", "URI", "IP Address")


@dataclass(frozen=True, slots=True)
class Sender:
    """Who one connection is (the certificate's first name) and the facilities it may send for."""

    name: str
    facilities: frozenset[str]


def certificate_names(peercert: Mapping[str, Any] | None) -> list[str]:
    """Subject CNs, then subjectAltName values, as ssl's getpeercert() gives them."""
    if not peercert:
        return []
    names = [value for rdn in peercert.get("subject", ()) for key, value in rdn if key == "commonName"]
    names += [value for kind, value in peercert.get("subjectAltName", ()) if kind in SAN_KINDS]
    return names


class SenderFacilities:
    """certificate name -> facility ids; a certificate none of whose names is listed may send
    for no facility (refused, not let through: a new interface is added on purpose)."""

    def __init__(self, entries: Iterable[tuple[str, Iterable[str]]]):
        self._by_name: dict[str, frozenset[str]] = {}
        for name, facilities in entries:
            self._by_name[name] = self._by_name.get(name, frozenset()) | frozenset(facilities)

    def sender(self, peercert: Mapping[str, Any] | None) -> Sender:
        names = certificate_names(peercert)
        allowed = frozenset().union(*(self._by_name.get(n, frozenset()) for n in names))
        return Sender(names[0] if names else "(no certificate)", allowed)
