"""Domain errors of svjscout.

Every message says what was found and what was expected, and names the file, branch,
dataset, bin or configuration key at fault.
"""


class SVJScoutError(Exception):
    """Base class of every error raised by svjscout."""


class ConfigError(SVJScoutError):
    """A job configuration is invalid (the message names the key path)."""


class InputFileError(SVJScoutError):
    """An input file cannot be used: corrupt, empty, missing its tree (names the file)."""


class MissingBranchError(InputFileError):
    """A branch required by the schema mapping is absent (names file and branch)."""


class ModelMismatchError(SVJScoutError):
    """An ONNX model's metadata disagrees with what the caller expects (names the key)."""


class HistogramError(SVJScoutError):
    """A histogram is missing an axis, dataset or region that a step needs."""


class DatacardError(SVJScoutError):
    """A datacard is inconsistent (names the bin, process or parameter)."""


class GenerationError(SVJScoutError):
    """Event generation failed or was configured inconsistently."""


class UnbackedError(DatacardError):
    """The background MC does not back a working point (the statistics guard, datacards/guard.py):
    no card, limit or closure figure is written for it unless explicitly allowed."""
