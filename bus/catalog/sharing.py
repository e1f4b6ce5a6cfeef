"""Sharing attributes of catalogue entries (R3, R5, R6): pure validation, no I/O.

``validate_sharing`` checks every rule at once and raises the first problem's error with all of them
listed under ``errors``, so the caller can fix the entry in one round.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bus.catalog.schema import FieldSpec
from bus.errors import (
    BusError,
    ConditionsRequired,
    CoreNotUnconditional,
    InvalidSharing,
    ReasonRequired,
    UnknownField,
)
from bus.vocab import Grade, SharingAttribute


@dataclass(frozen=True)
class Sharing:
    """A validated sharing declaration. ``None`` lists mean "no restriction on this axis"."""

    attribute: SharingAttribute
    reason: str | None = None
    legal_basis: str | None = None
    shareable_fields: list[str] | None = None
    eligible_agencies: list[str] | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "attribute": self.attribute.value,
            "reason": self.reason,
            "legal_basis": self.legal_basis,
            "shareable_fields": self.shareable_fields,
            "eligible_agencies": self.eligible_agencies,
        }


def _clean(text: str | None) -> str | None:
    text = (text or "").strip()
    return text or None


def _dedupe(items: list[str] | None) -> list[str] | None:
    if not items:
        return None
    return list(dict.fromkeys(i.strip() for i in items if i and i.strip())) or None


def _p(cls: type[BusError], field: str, detail: str) -> tuple[type[BusError], dict[str, str]]:
    return cls, {"code": cls.code, "field": field, "detail": detail}


def sharing_problems(
    grade: Grade,
    attribute: SharingAttribute,
    reason: str | None,
    legal_basis: str | None,
    shareable_fields: list[str] | None,
    eligible_agencies: list[str] | None,
    fields: list[FieldSpec],
) -> list[tuple[type[BusError], dict[str, str]]]:
    """Every rule the declaration breaks, most fundamental first."""
    out: list[tuple[type[BusError], dict[str, str]]] = []
    restricted = attribute in (SharingAttribute.CONDITIONAL, SharingAttribute.NONE)
    # R6: conditional / not shared must say why, and on which legal basis
    if restricted:
        missing = [n for n, v in (("reason", reason), ("legal_basis", legal_basis)) if not _clean(v)]
        if missing:
            out.append(
                _p(
                    ReasonRequired,
                    "sharing." + missing[0],
                    f"a {attribute.value} entry must state {' and '.join('sharing.' + m for m in missing)} "
                    "(R6: the reason it is not shared with every agency and the law or regulation that "
                    "requires it)",
                )
            )
    # R3/R5: core data is never shared unconditionally
    if grade is Grade.CORE and attribute is SharingAttribute.UNCONDITIONAL:
        out.append(
            _p(
                CoreNotUnconditional,
                "sharing.attribute",
                "core-grade data cannot be shared unconditionally: mark it conditional (naming the "
                "shareable fields and/or eligible agencies) or none, with a reason and legal basis",
            )
        )
    # R5: conditional means only some agencies, or only part of the data
    if attribute is SharingAttribute.CONDITIONAL and not shareable_fields and not eligible_agencies:
        out.append(
            _p(
                ConditionsRequired,
                "sharing.shareable_fields",
                "a conditional entry must name its conditions: sharing.shareable_fields (the part shared) "
                "and/or sharing.eligible_agencies (who qualifies)",
            )
        )
    names = [f.name for f in fields]
    if attribute is SharingAttribute.UNCONDITIONAL:
        if shareable_fields and set(shareable_fields) != set(names):
            out.append(
                _p(
                    InvalidSharing,
                    "sharing.shareable_fields",
                    "an unconditional entry shares every field with every agency; to share only some "
                    "fields mark it conditional (with a reason and legal basis), or leave shareable_fields "
                    "empty",
                )
            )
        if eligible_agencies:
            out.append(
                _p(
                    InvalidSharing,
                    "sharing.eligible_agencies",
                    "an unconditional entry is open to every agency; to limit it to some agencies mark it "
                    "conditional (with a reason and legal basis), or leave eligible_agencies empty",
                )
            )
    if attribute is SharingAttribute.NONE and (shareable_fields or eligible_agencies):
        out.append(
            _p(
                InvalidSharing,
                "sharing.shareable_fields" if shareable_fields else "sharing.eligible_agencies",
                "a not-shared entry cannot name shareable fields or eligible agencies; mark it conditional "
                "to share part of it",
            )
        )
    unknown = [f for f in shareable_fields or [] if f not in names]
    if unknown:
        out.append(
            _p(
                UnknownField,
                "sharing.shareable_fields",
                f"shareable_fields names {', '.join(repr(u) for u in unknown)}, not in the schema; the "
                f"schema's fields are: {', '.join(names)}",
            )
        )
    return out


def validate_sharing(
    grade: Grade,
    attribute: SharingAttribute,
    reason: str | None,
    legal_basis: str | None,
    shareable_fields: list[str] | None,
    eligible_agencies: list[str] | None,
    fields: list[FieldSpec],
) -> Sharing:
    """Normalise (trim, de-duplicate; an unconditional list of every field becomes ``None``) and validate."""
    shareable, eligible = _dedupe(shareable_fields), _dedupe(eligible_agencies)
    problems = sharing_problems(grade, attribute, reason, legal_basis, shareable, eligible, fields)
    if problems:
        cls, first = problems[0]
        more = f" (and {len(problems) - 1} more problem(s), see 'errors')" if len(problems) > 1 else ""
        raise cls(first["detail"] + more, errors=[p for _, p in problems])
    if attribute is SharingAttribute.UNCONDITIONAL:
        shareable = None
    return Sharing(
        attribute=attribute,
        reason=_clean(reason),
        legal_basis=_clean(legal_basis),
        shareable_fields=shareable,
        eligible_agencies=eligible,
    )
