"""``txray demo``: the paper's study (RQ1-RQ3 and Table 2) end to end on real offline text.

- :mod:`.config`: every size of the study and the presets (default, medium, paper).
- :mod:`.data`: Wikipedia lead sections (pretraining) and tweets (the new domain), cached;
  each replicate's text sample.
- :mod:`.lm`: the one-layer LSTM language model, trained to a plateau of validation perplexity.
- :mod:`.classifier`: supervised fine-tuning on positive vs negative tweets with early stopping, F1.
- :mod:`.pruning`: Table 2 with random sets of the same size and a bootstrap interval.
- :mod:`.stats`: intervals over replicates, the bootstrap, verdicts; :mod:`.claims`: the paper's claims.
- :mod:`.study`: the replicates, recording, comparisons, pruning, the report; :mod:`.result` holds
  what it measured and :mod:`.summary` prints it.

    from txray.demo import DemoConfig, run_study
    summary = run_study(DemoConfig(out="demo-output"))
"""

from __future__ import annotations

from typing import Any

from .config import PAPER, PRESETS, DemoConfig

__all__ = ["DemoConfig", "PAPER", "PRESETS", "run_study"]


def __getattr__(name: str) -> Any:
    # The study needs torch; importing the config (for the CLI's --help) must not.
    if name == "run_study":
        from .study import run_study

        return run_study
    raise AttributeError(f"module 'txray.demo' has no attribute {name!r}")
