"""One base class for every error meant for people. The CLI prints its lines (no
traceback) and exits with its code: 2 for bad input (nothing was touched), 1 otherwise."""

from __future__ import annotations


class ProvisionerError(Exception):
    """An error a person can act on; ``str()`` is one line per problem."""

    exit_code = 1

    def lines(self) -> list[str]:
        return str(self).splitlines() or [type(self).__name__]


class InputError(ProvisionerError):
    """The cluster file, an option or the state directory is wrong; nothing was changed."""

    exit_code = 2
