"""Errors of the chip model: a policy that misbehaves."""

from __future__ import annotations

from reprlib import Repr

_repr = Repr()
_repr.maxstring = 120
_repr.maxother = 120
_repr.maxlist = 8


class PolicyError(RuntimeError):
    """A policy raised, or returned something the controller cannot act on.

    The message names the policy, the method and what it returned (or raised). The run that
    met it stops; the chip host stays up and reports it.
    """

    def __init__(
        self,
        policy: str,
        method: str | None = None,
        problem: str = "",
        value: object = None,
        returned: bool = True,
    ) -> None:
        if method is None:  # a copy made from the message alone (SimPy re-raises copies)
            self.policy, self.method, self.problem = "", "", policy
            super().__init__(policy)
            return
        self.policy = policy
        self.method = method
        self.problem = problem
        if returned:
            msg = f"policy {policy!r}: {method}() returned {_repr.repr(value)}: {problem}"
        else:
            msg = f"policy {policy!r}: {method}() {problem}"
        super().__init__(msg)
        self.args = (msg,)
