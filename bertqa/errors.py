"""The errors bertqa raises on purpose. The CLI prints their message, never a traceback."""


class BertQAError(Exception):
    """Base class: a problem the user can fix, described in the message."""


class ModelError(BertQAError):
    """A model directory or hub id that cannot be used (missing file, bad config, offline)."""


class ModelUnavailable(ModelError):
    """A hub model that is neither cached nor reachable."""


class DataError(BertQAError):
    """An input data file that cannot be read (missing, malformed, unknown layout)."""


class InputError(BertQAError, ValueError):
    """A bad question or context (empty, whitespace only, too long)."""


class TargetUnavailable(BertQAError):
    """A target/precision/backend that cannot run here, with the reason."""


class NonFiniteActivationError(BertQAError, FloatingPointError):
    """NaN or Inf reached a quantized Linear layer (docs/quantization.md, step 2)."""
