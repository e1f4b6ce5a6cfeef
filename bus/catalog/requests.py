"""Request bodies of the catalogue and agency endpoints (pydantic), with the limits the store needs.

Unknown keys are refused (``request.invalid`` names them), so a typo such as ``legalbasis`` is caught
instead of silently dropped.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import Request
from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from bus.errors import RequestInvalid
from bus.vocab import Category, Grade, SharingAttribute

SLUG = r"^[a-z0-9](?:[a-z0-9-]{0,62}[a-z0-9])?$"


def _no_nul(value: str) -> str:
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    return value


Text = Annotated[str, AfterValidator(_no_nul)]
Slug = Annotated[str, Field(pattern=SLUG, description="lower-case letters, digits and '-', 1-64 characters")]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class AgencyIn(_Body):
    id: Slug
    name: Annotated[Text, Field(min_length=1, max_length=200)]
    region: Annotated[
        str,
        Field(pattern=r"^[0-9A-Za-z-]{2,32}$", description="administrative region code, e.g. 140900 (R17)"),
    ]
    roles: Annotated[
        list[Literal["agency", "reviewer", "auditor", "operator"]], Field(min_length=1, max_length=4)
    ]
    level: Literal["province", "city", "county"] = "city"


class SharingIn(_Body):
    attribute: SharingAttribute
    reason: Annotated[Text, Field(max_length=4000)] | None = None
    legal_basis: Annotated[Text, Field(max_length=4000)] | None = None
    shareable_fields: (
        Annotated[list[Annotated[Text, Field(max_length=200)]], Field(max_length=2000)] | None
    ) = None
    eligible_agencies: (
        Annotated[list[Annotated[Text, Field(max_length=64)]], Field(max_length=2000)] | None
    ) = None


class DatasetIn(_Body):
    id: Slug
    title: Annotated[Text, Field(min_length=1, max_length=200)]
    description: Annotated[Text, Field(max_length=20_000)] = ""
    category: Category
    grade: Grade
    tags: Annotated[list[Annotated[Text, Field(min_length=1, max_length=64)]], Field(max_length=50)] = []
    domestic_only: bool = False
    sharing: SharingIn
    avro_schema: Any = Field(alias="schema", description="Avro record schema (JSON object or JSON text)")


class ReviewIn(_Body):
    decision: Literal["approve", "reject"]
    comment: Annotated[Text, Field(max_length=4000)] | None = None


def no_nul_in_params(request: Request) -> None:
    """Router dependency: a NUL in a path or query parameter is refused before it reaches the store."""
    for name, value in [*request.path_params.items(), *request.query_params.multi_items()]:
        if isinstance(value, str) and "\x00" in value:
            raise RequestInvalid(f"parameter '{name}' must not contain NUL characters", field=name)
