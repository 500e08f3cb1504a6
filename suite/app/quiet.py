"""Library warnings that say nothing to a user of the suite, silenced in runs and grid jobs.

Deprecations raised inside torch.export / TVM's frontend and foolbox's scipy
import; ``SUITE_SHOW_WARNINGS=1`` shows them again.
"""

from __future__ import annotations

import os
import warnings

KNOWN_LIBRARY_WARNINGS: tuple[tuple[type[Warning], str], ...] = (
    (FutureWarning, r"`isinstance\(treespec, LeafSpec\)` is deprecated"),
    (DeprecationWarning, r"Please import `gaussian_filter` from the `scipy.ndimage` namespace"),
)


def silence_known_library_warnings() -> None:
    if os.environ.get("SUITE_SHOW_WARNINGS"):
        return
    for category, message in KNOWN_LIBRARY_WARNINGS:
        warnings.filterwarnings("ignore", message=message, category=category)
