"""Typed errors. Each class subclasses its stdlib twin and carries the CLI exit code.

Exit codes are interface (docs/cli.md):
0 ok, 1 unexpected, 2 usage, 3 model/weights, 4 image I/O, 5 device/out-of-memory,
6 batch finished with failures, 130 interrupted.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_UNEXPECTED = 1
EXIT_USAGE = 2
EXIT_MODEL = 3
EXIT_IMAGE_IO = 4
EXIT_DEVICE = 5
EXIT_BATCH_FAILURES = 6
EXIT_INTERRUPTED = 130


class RealSRError(Exception):
    """Base of every error realsr raises on purpose.

    ``message`` says what went wrong, ``hint`` what to do next.
    """

    exit_code: int = EXIT_UNEXPECTED

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message


class UsageError(RealSRError, ValueError):
    """Bad arguments or configuration (exit 2)."""

    exit_code = EXIT_USAGE


class ConfigError(UsageError):
    """A config file or --set override is invalid: unknown key, wrong type (exit 2)."""


class ModelError(RealSRError, LookupError):
    """Anything about models and weights (exit 3)."""

    exit_code = EXIT_MODEL


class UnknownModelError(ModelError, KeyError):
    """A model id or architecture name that the registry does not know."""

    def __str__(self) -> str:  # KeyError would quote the message
        return self.message


class WeightsError(ModelError, ValueError):
    """A weights file that cannot be used: wrong keys/shapes, not safetensors, bad metadata."""


class ChecksumError(WeightsError):
    """A downloaded file whose sha256 differs from the one recorded in weights.toml."""


class DownloadError(ModelError, ConnectionError):
    """The weights could not be fetched (network, missing file, offline without cache)."""


class ImageIOError(RealSRError, OSError):
    """An image that cannot be read or written: missing, corrupt, unsupported, too large (exit 4)."""

    exit_code = EXIT_IMAGE_IO


class FileWriteError(RealSRError, OSError):
    """A file other than an image that cannot be written: a training checkpoint on a full or
    read-only disk (exit 4, as an unwritable image)."""

    exit_code = EXIT_IMAGE_IO


class DeviceError(RealSRError, RuntimeError):
    """A device that is not available or cannot run the request (exit 5)."""

    exit_code = EXIT_DEVICE


class OutOfMemoryError(DeviceError, MemoryError):
    """Ran out of device or host memory even at the smallest tile (exit 5)."""


class BatchFailedError(RealSRError):
    """A batch finished, but some images failed (exit 6)."""

    exit_code = EXIT_BATCH_FAILURES

    def __init__(self, message: str, *, failed: int, total: int, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.failed = failed
        self.total = total
