"""Egress control (R8, R16) as a pure function: may this destination receive a grant's data?

Wherever data leaves the bus (sink connectors, pushes), the destination must be a receiving system
registered to the **grantee** agency by an admin: a grant is bound to the agency that requested it, so
any other destination is a third party (R8). A dataset marked ``domestic_only`` never goes to a system
registered as outside the jurisdiction (R16). Destinations are compared by host, so a system is
registered once, whatever path or port a connector writes to.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*://")
_WINDOWS_PATH = re.compile(r"^[A-Za-z]:[\\/]")
_LOCAL_SCHEMES = {"file", "sqlite"}
LOCALHOST = "localhost"
_LOOPBACK = {"localhost", "127.0.0.1", "::1", "0:0:0:0:0:0:0:1"}


@dataclass(frozen=True)
class ReceivingSystem:
    agency_id: str
    name: str
    host: str
    in_jurisdiction: bool


@dataclass(frozen=True)
class EgressDecision:
    allowed: bool
    code: str | None
    reason: str


def _canonical_host(host: str) -> str:
    host = host.strip().strip("[]").rstrip(".").lower()
    return LOCALHOST if host in _LOOPBACK else host


def host_of(destination: str) -> str:
    """The host of an http(s)/mqtt/SQLAlchemy URL or ``host:port``; ``localhost`` for files and SQLite.

    Loopback addresses (127.0.0.1, ::1) are all ``localhost``; names compare case-insensitively.
    """
    dest = destination.strip()
    if not dest:
        raise ValueError("an empty destination has no host")
    if _SCHEME.match(dest):
        parts = urlsplit(dest)
        scheme = parts.scheme.lower().split("+", 1)[0]
        if scheme in _LOCAL_SCHEMES:
            return LOCALHOST
        try:
            host = parts.hostname
        except ValueError:
            host = None
        if not host:
            raise ValueError(f"destination {destination!r} names no host")
        return _canonical_host(host)
    if dest.startswith(("/", "./", "../", "~")) or _WINDOWS_PATH.match(dest) or "\\" in dest:
        return LOCALHOST
    if "/" in dest:  # a relative path like out/records.jsonl, or host/path without a scheme
        head = dest.split("/", 1)[0]
        if "." in head and not head.startswith(".") and ":" not in head and _looks_like_host(head):
            return _canonical_host(head)
        return LOCALHOST
    if dest.startswith("[") and "]" in dest:  # [::1]:8080
        return _canonical_host(dest[1 : dest.index("]")])
    if dest.count(":") == 1:
        return _canonical_host(dest.split(":", 1)[0])
    return _canonical_host(dest)


def _looks_like_host(text: str) -> bool:
    labels = text.split(".")
    if not all(labels):
        return False
    return labels[-1].isalpha() or all(lbl.isdigit() for lbl in labels)


def decide_egress(
    destination: str, grantee_id: str, systems: Sequence[ReceivingSystem], domestic_only: bool
) -> EgressDecision:
    """Allowed only to a system registered to the grantee; never abroad for a domestic-only dataset."""
    try:
        host = host_of(destination)
    except ValueError as exc:
        return EgressDecision(False, "egress.refused", f"cannot tell where {destination!r} is: {exc}")
    at_host = [s for s in systems if _canonical_host(s.host) == host]
    own = [s for s in at_host if s.agency_id == grantee_id]
    if not own:
        others = sorted({s.agency_id for s in at_host})
        if others:
            return EgressDecision(
                False,
                "egress.refused",
                f"{host} is a receiving system of {', '.join(others)}, not of the grantee {grantee_id}: "
                f"shared data must not reach a third party (R8)",
            )
        registered = sorted({s.host for s in systems if s.agency_id == grantee_id})
        listed = (
            f"its registered hosts are {', '.join(registered)}" if registered else "it has none registered"
        )
        return EgressDecision(
            False,
            "egress.refused",
            f"{host} is not a receiving system registered to the grantee {grantee_id} ({listed}); an admin "
            f"registers systems with POST /v1/agencies/{grantee_id}/systems (R8)",
        )
    if domestic_only:
        inside = [s for s in own if s.in_jurisdiction]
        if not inside:
            return EgressDecision(
                False,
                "egress.refused",
                f"the dataset is domestic-only and {host} (system {own[0].name} of {grantee_id}) "
                f"lies outside the jurisdiction: cross-border transfer refused (R16)",
            )
        own = inside
    where = "inside the jurisdiction" if own[0].in_jurisdiction else "outside the jurisdiction"
    return EgressDecision(True, None, f"{host} is system {own[0].name} of the grantee {grantee_id}, {where}")
