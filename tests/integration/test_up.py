"""`databus up`: starts the embedded parts and the gateway, reports health, keeps its admin key, and
leaves no process behind when stopped."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from bus.embedded import free_port
from tests.helpers import poll_until

DATABUS = str(Path(sys.executable).with_name("databus"))


def _children(pid: int) -> set[int]:
    kids: set[int] = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        text = (task / "children").read_text().split()
        kids.update(int(k) for k in text)
    return kids


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie still answers kill(0); it is gone for our purposes once reaped or state Z
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except FileNotFoundError:
        return False


def _start(data_dir: Path, port: int, **env: str) -> subprocess.Popen[bytes]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith(("BUS_", "OTEL_"))}
    full_env.update(env)
    return subprocess.Popen([DATABUS, "up", "--port", str(port), "--data-dir", str(data_dir)], env=full_env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def _healthz(port: int) -> httpx.Response | None:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5)
    except httpx.HTTPError:
        return None


def _stop(proc: subprocess.Popen[bytes]) -> str:
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=30)
    return out.decode(errors="replace")


@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="needs /proc to find child processes")
def test_up_serves_health_keeps_admin_key_and_leaves_no_process(tmp_path: Path) -> None:
    data_dir, port = tmp_path / "data", free_port()
    proc = _start(data_dir, port)
    try:
        resp = poll_until(lambda: _healthz(port), timeout=60, what="databus up answering /healthz")
        assert resp.status_code == 200, resp.text
        parts = resp.json()["parts"]
        assert parts["broker"]["ok"] and parts["redis"]["ok"] and parts["store"]["ok"]
        children = _children(proc.pid)
        assert len(children) >= 2  # the broker and valkey-server
        key_file = data_dir / "admin.key"
        assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
        first_key = key_file.read_text().strip()
        admin = httpx.get(f"http://127.0.0.1:{port}/v1/bus", headers={"Authorization": f"Bearer {first_key}"})
        assert admin.status_code != 401
    finally:
        output = _stop(proc)
    assert proc.returncode == 0, output
    assert "admin key in" in output and str(key_file.resolve()) in output
    assert first_key not in output  # the secret itself is never printed
    poll_until(lambda: not any(_alive(c) for c in children), timeout=10, what="children gone")

    proc = _start(data_dir, port)
    try:
        poll_until(lambda: _healthz(port), timeout=60, what="second start")
        assert key_file.read_text().strip() == first_key  # generated once, reused
    finally:
        _stop(proc)


def test_health_is_503_naming_the_part_that_is_down(tmp_path: Path) -> None:
    port = free_port()
    dead_redis = f"redis://127.0.0.1:{free_port()}/0"
    proc = _start(tmp_path / "data", port, BUS_REDIS_URL=dead_redis)
    try:
        resp = poll_until(lambda: _healthz(port), timeout=60, what="gateway answering")
        assert resp.status_code == 503
        body = resp.json()
        assert body["failing"] == ["redis"]
        assert body["parts"]["broker"]["ok"] and body["parts"]["store"]["ok"]
    finally:
        _stop(proc)


def test_health_names_the_broker_when_it_does_not_answer(tmp_path: Path) -> None:
    """R14 fail closed, seen by operators: a broker that does not answer makes /healthz 503 with the
    broker named (checked with a DescribeCluster request, not by listing every topic)."""
    port = free_port()
    proc = _start(tmp_path / "data", port, BUS_KAFKA_BOOTSTRAP=f"127.0.0.1:{free_port()}")
    try:
        resp = poll_until(lambda: _healthz(port), timeout=60, what="gateway answering")
        assert resp.status_code == 503
        body = resp.json()
        assert "broker" in body["failing"] and body["parts"]["store"]["ok"]
    finally:
        _stop(proc)
