"""Integration-test hooks: install Debian's Chromium for the console's browser tests before any test
runs, so the apt install (minutes on a fresh machine) is outside every test's timeout."""

from __future__ import annotations

import pytest


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if any("browser" in getattr(item, "fixturenames", ()) for item in items):
        from tests.integration.console_helpers import install_chromium

        install_chromium()  # a failure is reported by the `browser` fixture, test by test
