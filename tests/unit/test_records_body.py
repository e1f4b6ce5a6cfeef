"""The HTTP publish body (``POST /v1/datasets/{id}/records``): parsed once, refused clearly (R13)."""

from __future__ import annotations

import pytest

from bus.errors import RequestInvalid
from bus.gateway.routes_records import MAX_RECORDS, records_of


@pytest.mark.parametrize(
    ("body", "says"),
    [
        (b"{", "not valid JSON"),
        (b"[]", "must be"),
        (b'{"records": 1}', "must be a JSON array"),
        (b'{"records": [], "extra": 1}', "extra: extra inputs are not permitted"),
        (b"{}", "records: field required"),
        (b'{"records": [' + b"{}," * MAX_RECORDS + b"{}]}", f"at most {MAX_RECORDS}"),
    ],
)
def test_r13_a_malformed_body_is_request_invalid(body: bytes, says: str) -> None:
    with pytest.raises(RequestInvalid, match=says):
        records_of(body)


def test_r13_records_come_back_as_sent() -> None:
    assert records_of(b'{"records": [{"a": 1.5}, 2, null]}') == [{"a": 1.5}, 2, None]
