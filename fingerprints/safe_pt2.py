"""Loading a ``torch.export`` ``.pt2`` archive without ever unpickling.

``torch.export.load`` is documented as pickle-based: it reads tensors with
``torch.load(weights_only=False)`` when an entry is flagged ``use_pickle`` and
``pickle.loads`` / ``torch._C._pickle_load_obj`` for custom and opaque
constants.  :func:`load_exported_program` runs it with those three doors shut:
every ``torch.load`` is forced to ``weights_only=True`` (tensors and plain
containers only) and the two raw unpicklers raise.  A plain exported CNN (raw
tensor payloads plus the JSON graph) loads; an archive that needs pickle is
refused with :class:`~suite.core.errors.ArtifactError`.

Call it only inside the isolated suspect worker: the graph itself is still
interpreted by torch, and the worker's time limits apply.
"""

from __future__ import annotations

import contextlib
import functools
import os
import pickle
import zipfile
from typing import Any, Iterator

from suite.core.errors import ArtifactError


class PickleRefused(pickle.UnpicklingError):
    """Raised instead of unpickling anything from an untrusted archive."""


def _refuse(*_args: Any, **_kwargs: Any) -> Any:
    raise PickleRefused("the archive needs pickle to load (custom or opaque objects); refused")


@contextlib.contextmanager
def no_pickle() -> Iterator[None]:
    """Inside: ``torch.load`` is weights-only, ``pickle.loads`` / ``pickle.load`` and torch's raw unpickler raise."""
    import torch

    saved = (torch.load, pickle.loads, pickle.load, getattr(torch._C, "_pickle_load_obj", None))
    original_load = torch.load

    @functools.wraps(original_load)
    def weights_only_load(*args: Any, **kwargs: Any) -> Any:
        kwargs["weights_only"] = True
        return original_load(*args, **kwargs)

    torch.load = weights_only_load
    pickle.loads = _refuse
    pickle.load = _refuse
    if saved[3] is not None:
        torch._C._pickle_load_obj = _refuse
    try:
        yield
    finally:
        torch.load, pickle.loads, pickle.load = saved[0], saved[1], saved[2]
        if saved[3] is not None:
            torch._C._pickle_load_obj = saved[3]


def load_exported_program(path: str | os.PathLike):
    """``torch.export.load(path)`` under :func:`no_pickle`; ArtifactError (one line) on any failure."""
    import torch

    if not zipfile.is_zipfile(path):
        raise ArtifactError(f"suspect {path} is not a torch.export .pt2 archive (not a zip file)")
    try:
        with no_pickle():
            return torch.export.load(os.fspath(path))
    except PickleRefused as err:
        raise ArtifactError(f"suspect {path}: {err}") from None
    except pickle.UnpicklingError as err:  # weights_only refused a non-tensor object
        first = str(err).strip().splitlines()[0] if str(err).strip() else err.__class__.__name__
        raise ArtifactError(f"suspect {path}: refused a pickled object ({first[:200]})") from None
    except Exception as err:  # noqa: BLE001 - any other failure: an unreadable archive
        first = str(err).strip().splitlines()[0] if str(err).strip() else ""
        raise ArtifactError(f"suspect {path} is not a loadable .pt2 archive "
                            f"({err.__class__.__name__}: {first[:200]})") from None
