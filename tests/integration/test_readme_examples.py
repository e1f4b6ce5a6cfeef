"""The README's runnable examples, run exactly as printed against a live bus (issue 13, item 5; R14).

Every fenced ``sh`` block preceded by ``<!-- runnable -->`` is run, in order, as one bash script
(``set -euo pipefail``; ``curl -f`` fails on any HTTP error) from the root of the clone, with only the
environment a user would have: ``databus`` on ``PATH``, ``BUS_URL`` and ``BUS_DATA_DIR`` of the running
bus. Then the follow-up that ``databus tail`` promises: a second tail continues after what it printed.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import httpx

from bus.samples import licence_record
from bus.stack import Stack
from tests.helpers import ROOT

RUNNABLE = re.compile(r"<!-- runnable -->\n```sh\n(.*?)```", re.DOTALL)


def runnable_blocks() -> list[str]:
    return RUNNABLE.findall((ROOT / "README.md").read_text(encoding="utf-8"))


def test_r14_readme_marks_runnable_blocks() -> None:
    blocks = runnable_blocks()
    assert len(blocks) >= 3
    script = "\n".join(blocks)
    assert "schemas/examples/market-licences.yaml" in script and "schemas/examples/licence.avsc" in script
    for line in script.splitlines():  # every curl sending a JSON body says so
        if line.lstrip().startswith("curl") and " -d " in line + " ":
            assert "Content-Type: application/json" in line, line


def test_r14_readme_examples_run_as_printed(bus_stack: Stack, tmp_path: Path) -> None:
    bin_dir = str(Path(sys.executable).parent)
    env = {k: v for k, v in os.environ.items() if not k.startswith("BUS_")}
    env.update(
        PATH=f"{bin_dir}:{env.get('PATH', '')}",
        BUS_URL=bus_stack.url,
        BUS_DATA_DIR=str(bus_stack.settings.data_dir),
        XDG_STATE_HOME=str(tmp_path / "state"),
        COLUMNS="200",
    )
    script = "set -euo pipefail\n" + "\n".join(runnable_blocks())
    done = subprocess.run(["bash", "-c", script], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=240)
    assert done.returncode == 0, f"stdout:\n{done.stdout}\nstderr:\n{done.stderr}"
    # curl prints its answer without a newline, so a tail line may follow it on the same line
    lines = [json.loads(x[x.index('{"record_id"'):]) for x in done.stdout.splitlines() if '{"record_id"' in x]
    # the two records have different keys, so they sit on different partitions: Kafka orders per key only
    assert sorted(r["value"]["licence_no"] for r in lines) == ["LIC00000001", "LIC00000002"]
    by_no = {r["value"]["licence_no"]: r["value"] for r in lines}
    assert by_no["LIC00000001"]["phone"] == "*******0001"
    assert not any("legal_rep_id" in v for v in by_no.values())

    # a second `databus tail` starts after the last record the first one printed
    kept = list((tmp_path / "state" / "databus" / "tail").glob("*.cursor"))
    assert len(kept) == 1 and kept[0].read_text() == lines[-1]["cursor"]
    grant = kept[0].stem.split("-", 1)[1]
    admin_key = (bus_stack.settings.data_dir / "admin.key").read_text().strip()
    with httpx.Client(base_url=bus_stack.url, timeout=30) as client:
        grants = client.get("/v1/grants", headers={"Authorization": f"Bearer {admin_key}"}).json()["grants"]
        assert grant in {g["id"] for g in grants}
        market_key = _market_key(bus_stack, admin_key)
        third = client.post("/v1/datasets/market-licences/records", json={"records": [licence_record(3)]},
                            headers={"Authorization": f"Bearer {market_key}"})
        assert third.status_code == 200 and third.json()["accepted"] == 1, third.text
    psb_key = _agency_key(bus_stack, admin_key, "psb")
    again = subprocess.run(["databus", "tail", grant, "--limit", "1", "--key", psb_key], cwd=ROOT, env=env,
                           capture_output=True, text=True, timeout=60)
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["value"]["licence_no"] == "LIC00000003"  # not LIC00000001 again


def _agency_key(stack: Stack, admin_key: str, agency: str) -> str:
    """A fresh key for ``agency`` (the script's own keys stay in its shell): rotate through the store."""
    from bus.keys import hash_key, new_api_key, signing_secret_for
    from bus.store.models import Agency

    assert stack.ctx is not None
    key = new_api_key(agency)
    with stack.ctx.store.session() as s:
        row = s.get(Agency, agency)
        assert row is not None
        row.key_hash, row.key_prefix = hash_key(key), key[:10]
        row.signing_secret = signing_secret_for(key).hex()
    return key


def _market_key(stack: Stack, admin_key: str) -> str:
    return _agency_key(stack, admin_key, "market")
