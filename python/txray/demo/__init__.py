"""``txray demo``: the paper's study (RQ1-RQ3 and Table 2) end to end on real offline text.

- :mod:`.config`: every size of the study, the CPU defaults and the ``--paper`` preset.
- :mod:`.data`: Wikipedia lead sections (pretraining) and tweets (the new domain), cached.
- :mod:`.lm`: the one-layer LSTM language model, trained with snapshots.
- :mod:`.classifier`: supervised fine-tuning on positive vs negative tweets, F1.
- :mod:`.study`: recording, comparisons, pruning, the report; :mod:`.result` holds what it measured
  and :mod:`.summary` prints it.

    from txray.demo import DemoConfig, run_study
    summary = run_study(DemoConfig(out="demo-output"))
"""

from __future__ import annotations

from typing import Any

from .config import PAPER, DemoConfig

__all__ = ["DemoConfig", "PAPER", "run_study"]


def __getattr__(name: str) -> Any:
    # The study needs torch; importing the config (for the CLI's --help) must not.
    if name == "run_study":
        from .study import run_study

        return run_study
    raise AttributeError(f"module 'txray.demo' has no attribute {name!r}")
