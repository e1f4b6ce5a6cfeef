"""The README's list of error codes is the contract users read: it must name every stable code the bus can
answer with (R14: every refusal carries a stable, documented code)."""

from __future__ import annotations

import re
from pathlib import Path

from bus.errors import all_codes

README = Path(__file__).resolve().parents[2] / "README.md"


def test_r14_readme_documents_every_error_code() -> None:
    text = README.read_text()
    section = text[text.index("Error codes (every error is") :]
    section = section[: section.index("bus.errors.all_codes()")]
    listed = set(re.findall(r"`([a-z_]+(?:\.[a-z_]+)*)`", section))
    missing = sorted(all_codes() - listed)
    assert not missing, f"codes the bus answers with but the README does not list: {missing}"
