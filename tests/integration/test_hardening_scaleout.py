"""Scaling out on one machine (issue 13, item 5; R14): ``databus up --no-workers`` writes
``<data-dir>/bus.env``; a standalone ``databus worker pipeline`` starts from it, and the README's
walk-through runs as printed against that bus."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
from pathlib import Path

import httpx

from bus.embedded import free_port
from tests.helpers import ROOT, poll_until
from tests.integration.test_readme_examples import runnable_blocks

BIN = Path(sys.executable).parent


def _stop(proc: subprocess.Popen[str]) -> str:
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=30)
    return out


def test_r14_standalone_pipeline_from_bus_env_delivers(tmp_path: Path) -> None:
    data_dir, port = tmp_path / "data", free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("BUS_")}
    env.update(PATH=f"{BIN}:{env.get('PATH', '')}", XDG_STATE_HOME=str(tmp_path / "state"), COLUMNS="200")
    argv = [str(BIN / "databus"), "up", "--no-workers", "--port", str(port), "--data-dir", str(data_dir)]
    up = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    pipeline: subprocess.Popen[str] | None = None
    try:
        env_file = data_dir / "bus.env"
        poll_until(lambda: env_file.exists(), timeout=60, what="bus.env written")
        assert stat.S_IMODE(env_file.stat().st_mode) == 0o600
        text = env_file.read_text()
        for name in ("BUS_KAFKA_BOOTSTRAP", "BUS_REDIS_URL", "BUS_DATA_DIR", "BUS_KAFKA_PROFILE=embedded"):
            assert name in text
        join = f"set -a; . {env_file}; set +a; exec databus worker pipeline --group bus.pipeline"
        pipeline = subprocess.Popen(
            ["bash", "-c", join],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        url = f"http://127.0.0.1:{port}"
        poll_until(lambda: httpx.get(f"{url}/healthz", timeout=5).status_code == 200, timeout=30,
                   what="healthy gateway")
        script = "set -euo pipefail\n" + "\n".join(runnable_blocks())
        done = subprocess.run(["bash", "-c", script], cwd=ROOT, timeout=240, capture_output=True, text=True,
                              env={**env, "BUS_URL": url, "BUS_DATA_DIR": str(data_dir)})
        assert done.returncode == 0, f"{done.stdout}\n{done.stderr}"
        lines = [x for x in done.stdout.splitlines() if '{"record_id"' in x]
        got = [json.loads(x[x.index('{"record_id"'):]) for x in lines]
        assert [r["value"]["licence_no"] for r in got] == ["LIC00000001", "LIC00000002"]
    finally:
        if pipeline is not None:
            out = _stop(pipeline)
            assert "pipeline started (group bus.pipeline, subscribe mode)" in out, out
        _stop(up)
    assert not (data_dir / "bus.env").exists()  # removed when the bus stops
