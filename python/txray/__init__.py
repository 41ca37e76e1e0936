"""txray: what each neuron of a network prefers across a corpus, and how
that changes between training stages or models (the TX-Ray method).

    rec = txray.Recorder(n_neurons=1500, features={"token": 33278, "pos": 45})
    rec.update(acts, {"token": ids, "pos": tags}, mask=valid)
    prof = rec.profile(name="epoch1", feature_names={"token": vocab, "pos": tags})
    txray.compare(prof_a, prof_b, kind="token")
"""

from typing import Any

from . import (
    analysis,  # the tables behind the figures (txray.plots needs plotly; imported on use)
    neurons,  # per-neuron views: txray show, the report's neuron browser
)
from ._version import __version__
from .compare import COMPARE_SCHEMA, MATCH_SCHEMA, NEAREST_SCHEMA, compare, match, nearest, summary
from .neurons import NEURON_TABLE_SCHEMA, neuron_detail, neuron_details, neuron_table
from .parquet import ProfileError
from .profile import (
    CONTEXTS_SCHEMA,
    TABLE_SCHEMA,
    Distributions,
    KindCells,
    Profile,
    align,
    merge_profiles,
    top_contexts,
    union_vocabulary,
)
from .prune import prune, pruning_sets, pruning_table
from .recorder import Recorder
from .report import write_report
from .threads import get_num_threads, set_num_threads

__all__ = [
    "__version__",
    "Recorder",
    "Profile",
    "KindCells",
    "ProfileError",
    "Distributions",
    "merge_profiles",
    "align",
    "union_vocabulary",
    "compare",
    "summary",
    "nearest",
    "match",
    "TABLE_SCHEMA",
    "CONTEXTS_SCHEMA",
    "top_contexts",
    "COMPARE_SCHEMA",
    "NEAREST_SCHEMA",
    "MATCH_SCHEMA",
    "set_num_threads",
    "get_num_threads",
    "analysis",
    "neurons",
    "neuron_table",
    "neuron_detail",
    "neuron_details",
    "NEURON_TABLE_SCHEMA",
    "prune",
    "pruning_sets",
    "pruning_table",
    "write_report",
]

# Recording real models (issue 3). Corpus, features and NeuroX reading need no
# torch; the parts that do are imported on first use, so `import txray` stays
# light where torch is not installed.
from .corpus import Corpus, split_whitespace, split_words
from .features import Column, Feature, Label, Ngram, Pos, Prediction, Token, Vocabulary
from .neurox import read_neurox, record_neurox
from .options import RecordOptions
from .taggers import FlairTagger, SpacyTagger, Tagger

_TORCH_EXPORTS = {
    "record_model": "pipeline",
    "Capture": "capture",
    "Layer": "capture",
    "mlp_layers": "capture",
    "WordTokenizer": "word_tokenizers",
    "HFWordTokenizer": "word_tokenizers",
    "VocabTokenizer": "word_tokenizers",
}


def __getattr__(name: str) -> Any:
    if name in _TORCH_EXPORTS:
        import importlib

        return getattr(importlib.import_module(f".{_TORCH_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module 'txray' has no attribute {name!r}")


__all__ += [
    "Corpus",
    "split_words",
    "split_whitespace",
    "Feature",
    "Token",
    "Pos",
    "Label",
    "Column",
    "Ngram",
    "Prediction",
    "Vocabulary",
    "Tagger",
    "SpacyTagger",
    "FlairTagger",
    "read_neurox",
    "record_neurox",
    "RecordOptions",
    *_TORCH_EXPORTS,
]
