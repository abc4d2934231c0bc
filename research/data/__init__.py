"""Data sets as in-memory arrays with a fixed split, and a deterministic batch order.

Every loader returns a `Dataset`; `load(config.data)` picks one by name. Images are NHWC,
sequences are (T, F), flat features are (D,); labels are int32 class indices.
"""
from research.data.core import (  # noqa: F401
    STANDARDIZE, Dataset, Split, batch_indices, epoch_permutation, load, names, register,
    split_and_standardize, fixed_test_split)

# Loaders register themselves on import.
from research.data import cifar10  # noqa: E402,F401
from research.data import mnist  # noqa: E402,F401
from research.data import mnist1d_data  # noqa: E402,F401
from research.data import records  # noqa: E402,F401
from research.data import sklearn_data  # noqa: E402,F401
from research.data import text  # noqa: E402,F401
