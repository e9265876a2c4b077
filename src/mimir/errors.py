"""Errors a user can act on, and the exit codes the command line maps them to.

Every failure caused by input (a file, a config, a command-line value) is one of these; the command line
prints its message and exits with its code, never a traceback.
"""

from __future__ import annotations

from pathlib import Path

EXIT_OK = 0
EXIT_INTERNAL = 1  # a bug in mimir: please report it
EXIT_USAGE = 2  # a bad command-line value (argparse uses 2 as well)
EXIT_BAD_INPUT = 3  # an input file is not what it must be (not a capture, empty, corrupt record)
EXIT_UNSUPPORTED = 4  # a well-formed capture that mimir cannot decode (link type, timestamp resolution)
EXIT_IO = 5  # a file cannot be read or written (missing, permissions, disk full)
EXIT_PROVISION = 6  # an Ansible play failed on a host (the message names the host and the task)
EXIT_CLUSTER = 7  # the Kubernetes cluster or the testbed failed a step of a collection (the run is marked incomplete)
EXIT_INTERRUPTED = 130  # stopped by Ctrl-C or SIGTERM after cleaning up (the run is marked incomplete)

EXIT_CODES = {
    EXIT_OK: "success",
    EXIT_INTERNAL: "internal error (a bug: please report it with MIMIR_DEBUG=1 output)",
    EXIT_USAGE: "bad command-line usage or value",
    EXIT_BAD_INPUT: "bad input file: not a capture, empty, or a corrupt record (the message names file and offset)",
    EXIT_UNSUPPORTED: "unsupported capture content, such as an unsupported link type",
    EXIT_IO: "a file could not be read or written",
    EXIT_PROVISION: "provisioning failed on a host (the message names the host and the task)",
    EXIT_CLUSTER: "the cluster or the testbed failed a collection step (the run is left marked incomplete)",
    EXIT_INTERRUPTED: "interrupted by Ctrl-C or SIGTERM, after cleaning up",
}


class MimirError(Exception):
    """An error caused by the user's input or environment, reported without a traceback."""

    exit_code = EXIT_INTERNAL


class UsageError(MimirError):
    """A command-line or config value that cannot be used; the message names the option or key."""

    exit_code = EXIT_USAGE


class MissingExtra(UsageError):
    """A command needs an optional part of mimir (an extra) that is not installed; the message says what to install."""


class ConfigError(MimirError):
    """The workflow's config breaks its schema or names a run it does not define; the message names the key."""

    exit_code = EXIT_USAGE


class IOFailure(MimirError):
    """A file or folder cannot be read or written; the message names it."""

    exit_code = EXIT_IO


class CaptureError(MimirError):
    """A capture file is malformed; the message names the file and the byte offset."""

    exit_code = EXIT_BAD_INPUT

    def __init__(self, path: str | Path, offset: int | None, message: str, *, compressed: bool = False):
        self.path = str(path)
        self.offset = offset
        where = self.path
        if offset is not None:
            where += f", {'uncompressed ' if compressed else ''}byte offset {offset}"
        super().__init__(f"{where}: {message}")


class UnsupportedCapture(CaptureError):
    """A well-formed capture with content mimir cannot decode (a link type, a timestamp resolution)."""

    exit_code = EXIT_UNSUPPORTED


class AppError(MimirError):
    """An application file that cannot be used; the message names the file and the key."""

    exit_code = EXIT_BAD_INPUT


class EntitiesError(MimirError):
    """A run's run.json or entity events cannot be used (missing, malformed, an incomplete run); names the file."""

    exit_code = EXIT_BAD_INPUT


class TableError(MimirError):
    """A table given to a stage is not the one it reads (not parquet, cut short, another stage's table); names it."""

    exit_code = EXIT_BAD_INPUT


class LegacyError(MimirError):
    """A file of the prototype's data cannot be imported; the message names the file."""

    exit_code = EXIT_BAD_INPUT


class ManifestError(MimirError):
    """A manifest file is not YAML, or a document in it is not a Kubernetes object."""

    exit_code = EXIT_BAD_INPUT


class NotFittedError(MimirError):
    """A detector asked to score (or for its threshold) before fit: a model saved unfitted is unusable input."""

    exit_code = EXIT_BAD_INPUT


class ProvisionError(MimirError):
    """A play failed: the message names the host and the task."""

    exit_code = EXIT_PROVISION


class ClusterError(MimirError):
    """The Kubernetes API refused or failed a step of a collection."""

    exit_code = EXIT_CLUSTER


class ApiStatusError(ClusterError):
    """The API answered a request with an error status (kept apart so callers can react to 404, 409, 410)."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        self.status, self.reason = status, reason
        super().__init__(message)


class TestbedError(MimirError):
    """The testbed (network namespaces, its daemons) failed a step: the message names the step and the daemon."""

    __test__ = False  # not a pytest class, whatever its name
    exit_code = EXIT_CLUSTER


class Interrupted(MimirError):
    """Ctrl-C or SIGTERM during long work, after its cleanup ran."""

    exit_code = EXIT_INTERRUPTED
