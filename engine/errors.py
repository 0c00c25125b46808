"""The errors a user can act on, one type per kind of mistake (standard library only).

Every one is an :class:`EngineError`: the worker shows its message as it is, without a
traceback, and tests check the type rather than match message text alone.
"""

from __future__ import annotations


class EngineError(Exception):
    """A clear, specific error for the user: the message is shown without a traceback."""


class JobCancelled(Exception):
    """Raised at the next cancellation check after the job was asked to stop."""


class InvalidSpec(EngineError):
    """A job spec (or a parameter in it) is malformed: unknown key, missing key, wrong value."""


class MissingCRS(EngineError):
    """A raster or vector input has no coordinate reference system (or no geotransform)."""


class NoOverlap(EngineError):
    """Inputs that must cover common ground (sources, labels, masks, references) do not."""


class NotAModelFolder(EngineError):
    """A path given as a model folder is not one (missing or invalid ``deepfield.json``/model)."""
