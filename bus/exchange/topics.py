"""Topic naming of the contract, with the configurable prefix that lets several buses share a cluster."""

from __future__ import annotations

import re

_SAFE = re.compile(r"[^A-Za-z0-9._-]")


class Topics:
    def __init__(self, prefix: str = "") -> None:
        self.prefix = prefix

    def _t(self, name: str) -> str:
        return f"{self.prefix}{_SAFE.sub('_', name)}"

    def ingress(self, dataset: str) -> str:
        return self._t(f"ingress.{dataset}")

    def data(self, dataset: str) -> str:
        return self._t(f"data.{dataset}")

    def rejected(self, dataset: str) -> str:
        return self._t(f"rejected.{dataset}")

    def deliver(self, grant: str) -> str:
        return self._t(f"deliver.{grant}")

    @property
    def audit(self) -> str:
        return self._t("bus.audit")

    @property
    def catalog(self) -> str:
        return self._t("bus.catalog")

    @property
    def receipts(self) -> str:
        return self._t("bus.receipts")

    @property
    def incidents(self) -> str:
        return self._t("bus.incidents")

    @property
    def dead_letter(self) -> str:
        return self._t("bus.deadletter")
