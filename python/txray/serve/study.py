"""The profiles a server shows: their neuron browser document, and each neuron's page on demand."""

from __future__ import annotations

import functools
import threading
from collections.abc import Sequence
from typing import Any

from .. import browser
from ..profile import Profile
from .folders import RequestError

DETAIL_CACHE = 4096
"""Neuron pages kept after they were first asked for."""


class Study:
    """Profiles (stages of one layer, or unrelated profiles) as the browser shows them.

    The table of every neuron is computed once at startup; a neuron's top
    features, contexts and change (:func:`txray.browser.neuron_entry`) when it
    is first opened, then cached.
    """

    def __init__(self, profiles: Sequence[Profile], kind: str = "token", top: int = 10) -> None:
        self.profiles = list(profiles)
        if not self.profiles:
            raise ValueError("profiles: give at least one profile")
        if kind not in self.profiles[0].kinds:
            raise ValueError(f"kind {kind!r}: the profiles have {', '.join(self.profiles[0].kinds)}")
        self.kind = kind
        self.top = top
        self.document = browser.browser_document(self.profiles, kind=kind, top=top, details=False)
        self._lock = threading.Lock()  # neuron_details is not meant to run twice at once on one profile
        self._entry = functools.lru_cache(maxsize=DETAIL_CACHE)(self._compute)

    @property
    def n_neurons(self) -> int:
        return int(self.document["n_neurons"])

    def neuron(self, neuron: int) -> dict[str, Any]:
        """The browser's page of one neuron (``doc.neurons[n]`` of a report)."""
        if not 0 <= neuron < self.n_neurons:
            raise RequestError(
                f"neuron {neuron} is out of range: the profiles have {self.n_neurons} neurons (0 to {self.n_neurons - 1})",
                404,
            )
        return self._entry(neuron)

    def _compute(self, neuron: int) -> dict[str, Any]:
        with self._lock:
            return browser.neuron_entry(self.profiles, self.document, neuron, top=self.top)

    def stage_names(self) -> list[str]:
        return list(self.document["stages"])

    def profile(self, stage: int) -> Profile:
        if not 0 <= stage < len(self.profiles):
            raise RequestError(f"stage {stage} is out of range: there are {len(self.profiles)} stages")
        return self.profiles[stage]
