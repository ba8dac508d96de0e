"""The package's error types. A leaf: imports nothing from the package, so every layer can raise them.

Each is also a ValueError or RuntimeError, so callers' existing `except ValueError` clauses still hold.
The command-line tools turn `USER_ERRORS` (these types only) into one line on stderr and exit code 2,
`TrainingError` into exit code 3; anything else is a bug and prints its traceback. The library's own
functions (models, flows, `synthesize`) answer a wrong argument with a plain ValueError, as Python APIs do;
the command lines check their inputs before those are reached.
"""

from __future__ import annotations


class NanoflowError(Exception):
    """Base of every error this package raises on purpose."""


class ConfigError(NanoflowError, ValueError):
    """A config field holds a value the code cannot run with. The message names the field, the value and
    what is allowed; fix the config file or the `--config.<section>.<field>=` override."""


class DataError(NanoflowError, ValueError):
    """The dataset cannot be used as configured (missing path, no usable audio, empty split). Check
    `data.path` and `data.source`."""


class AudioReadError(NanoflowError, ValueError):
    """A file that is not readable audio; the data loaders skip such files and count them by `kind`
    ("unreadable", "non-finite", "out of range")."""

    def __init__(self, message: str, kind: str = "unreadable"):
        super().__init__(message)
        self.kind = kind


class ConversionError(NanoflowError, ValueError):
    """An official checkpoint or config that does not match what the converter expects (a missing or
    unexpected tensor, a shape, a field the weights contradict)."""


class InputError(NanoflowError, ValueError):
    """A file handed to us that cannot be read as what it should be: missing, not a regular file (a FIFO,
    a device, a folder), empty, larger than its limit, or its header contradicting its size."""


class CheckpointError(NanoflowError, ValueError):
    """A checkpoint folder that cannot be used: missing, unreadable, damaged (an array that does not match
    the checksum written with it) or holding non-finite values. The message names the folder."""


class OutputError(NanoflowError, ValueError):
    """An output that cannot be written: a read-only or full filesystem, a file where a folder is needed,
    or a workdir another trainer holds. The message names the path and the reason; nothing partial is left."""


class UsageError(NanoflowError, ValueError):
    """Command-line flags or arguments that do not go together or name nothing usable (two model sources,
    no input, an option that needs another)."""


class TrainingError(NanoflowError, RuntimeError):
    """The run cannot go on (e.g. too many non-finite steps in a row); the last checkpoint is intact."""


# mistakes in what a user gave (flags, configs, files): one line on stderr and exit code 2. Only the
# package's own types: any other exception is a bug and keeps its traceback.
USER_ERRORS: tuple[type[BaseException], ...] = (
    ConfigError,
    DataError,
    AudioReadError,
    ConversionError,
    InputError,
    CheckpointError,
    OutputError,
    UsageError,
)
