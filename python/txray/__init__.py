"""txray: what each neuron of a network prefers across a corpus, and how
that changes between training stages or models (the TX-Ray method).

    rec = txray.Recorder(n_neurons=1500, features={"token": 33278, "pos": 45})
    rec.update(acts, {"token": ids, "pos": tags}, mask=valid)
    prof = rec.profile(name="epoch1", feature_names={"token": vocab, "pos": tags})
    txray.compare(prof_a, prof_b, kind="token")
"""

from ._version import __version__
from .compare import COMPARE_SCHEMA, MATCH_SCHEMA, NEAREST_SCHEMA, compare, match, nearest, summary
from .profile import TABLE_SCHEMA, Distributions, KindCells, Profile
from .recorder import Recorder
from .threads import get_num_threads, set_num_threads

__all__ = [
    "__version__",
    "Recorder",
    "Profile",
    "KindCells",
    "Distributions",
    "compare",
    "summary",
    "nearest",
    "match",
    "TABLE_SCHEMA",
    "COMPARE_SCHEMA",
    "NEAREST_SCHEMA",
    "MATCH_SCHEMA",
    "set_num_threads",
    "get_num_threads",
]
