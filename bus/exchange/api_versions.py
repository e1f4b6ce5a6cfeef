"""Which Kafka APIs a broker says it supports: one raw ApiVersions (v0) request.

confluent-kafka does not expose the ApiVersions answer librdkafka gets when it connects, and the bus must
know before it calls an admin API that librdkafka cannot survive on a broker that only half implements it
(Tansu's CreateAcls answer makes librdkafka abort the process). ApiVersions is the one request every
broker answers before authentication, on SASL listeners too, so a plain socket is enough; v0 is the
version every broker keeps.
"""

from __future__ import annotations

import socket
import ssl
import struct
from dataclasses import dataclass

API_VERSIONS_KEY = 18
ACL_API_KEYS = {"DescribeAcls": 29, "CreateAcls": 30, "DeleteAcls": 31}
_CLIENT_ID = b"databus-probe"


@dataclass(frozen=True)
class ApiRange:
    min_version: int
    max_version: int


def encode_request(correlation_id: int, client_id: bytes = _CLIENT_ID) -> bytes:
    """ApiVersions v0: size, api key 18, version 0, correlation id, client id (int16-length string)."""
    body = struct.pack(">hhih", API_VERSIONS_KEY, 0, correlation_id, len(client_id)) + client_id
    return struct.pack(">i", len(body)) + body


def decode_response(payload: bytes, correlation_id: int) -> dict[int, ApiRange]:
    """The broker's supported versions per api key, from a v0 response (after its size prefix).

    Raises ``ValueError`` on anything that is not a well-formed, successful answer to our request."""
    try:
        corr, error, count = struct.unpack_from(">ihi", payload, 0)
        if corr != correlation_id:
            raise ValueError(f"answer to request {corr}, not {correlation_id}")
        if error != 0:
            raise ValueError(f"ApiVersions error code {error}")
        if count < 0 or len(payload) < 10 + 6 * count:
            raise ValueError(f"truncated: {count} api keys announced in {len(payload)} bytes")
        out: dict[int, ApiRange] = {}
        for i in range(count):
            key, lo, hi = struct.unpack_from(">hhh", payload, 10 + 6 * i)
            out[key] = ApiRange(lo, hi)
        return out
    except struct.error as exc:
        raise ValueError(f"malformed ApiVersions answer: {exc}") from None


def _hosts(bootstrap: str) -> list[tuple[str, int]]:
    out: list[tuple[str, int]] = []
    for item in bootstrap.split(","):
        item = item.strip().split("://", 1)[-1]
        if not item:
            continue
        host, _, port = item.rpartition(":")
        out.append((host.strip("[]") or "localhost", int(port)))
    return out


def _recv_exactly(sock: socket.socket, n: int) -> bytes:
    chunks: list[bytes] = []
    while n > 0:
        chunk = sock.recv(n)
        if not chunk:
            raise ConnectionError("the broker closed the connection before answering ApiVersions")
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)


def _ask(host: str, port: int, timeout: float, tls: bool) -> dict[int, ApiRange]:
    with socket.create_connection((host, port), timeout=timeout) as raw:
        sock: socket.socket = (
            ssl.create_default_context().wrap_socket(raw, server_hostname=host) if tls else raw
        )
        sock.sendall(encode_request(1))
        (size,) = struct.unpack(">i", _recv_exactly(sock, 4))
        if not 10 <= size <= 1 << 20:
            raise ValueError(f"implausible ApiVersions answer size {size}")
        return decode_response(_recv_exactly(sock, size), 1)


def api_versions(bootstrap: str, *, timeout: float = 3.0, tls: bool = False) -> dict[int, ApiRange]:
    """Ask the bootstrap brokers in turn; the first well-formed answer wins (``OSError``/``ValueError``
    naming the last failure when none answers)."""
    last: Exception = ValueError(f"no broker address in {bootstrap!r}")
    for host, port in _hosts(bootstrap):
        try:
            return _ask(host, port, timeout, tls)
        except (OSError, ValueError) as exc:
            last = exc
    raise last
