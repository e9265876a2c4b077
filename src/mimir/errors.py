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
EXIT_CLUSTER = 7  # the Kubernetes cluster refused or failed a step of a collection (the run is marked incomplete)
EXIT_INTERRUPTED = 130  # stopped by Ctrl-C or SIGTERM after cleaning up (the run is marked incomplete)

EXIT_CODES = {
    EXIT_OK: "success",
    EXIT_INTERNAL: "internal error (a bug: please report it with MIMIR_DEBUG=1 output)",
    EXIT_USAGE: "bad command-line usage or value",
    EXIT_BAD_INPUT: "bad input file: not a capture, empty, or a corrupt record (the message names file and offset)",
    EXIT_UNSUPPORTED: "unsupported capture content, such as an unsupported link type",
    EXIT_IO: "a file could not be read or written",
    EXIT_PROVISION: "provisioning failed on a host (the message names the host and the task)",
    EXIT_CLUSTER: "the cluster failed a collection step (the run is left marked incomplete)",
    EXIT_INTERRUPTED: "interrupted by Ctrl-C or SIGTERM, after cleaning up",
}


class MimirError(Exception):
    """An error caused by the user's input or environment, reported without a traceback."""

    exit_code = EXIT_INTERNAL


class UsageError(MimirError):
    exit_code = EXIT_USAGE


class IOFailure(MimirError):
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
    exit_code = EXIT_UNSUPPORTED


class ProvisionError(MimirError):
    """A play failed: the message names the host and the task."""

    exit_code = EXIT_PROVISION


class ClusterError(MimirError):
    """The Kubernetes API refused or failed a step of a collection."""

    exit_code = EXIT_CLUSTER


class Interrupted(MimirError):
    """Ctrl-C or SIGTERM during long work, after its cleanup ran."""

    exit_code = EXIT_INTERRUPTED
