"""The shutdown request the main loop acts on, and what the run state then refuses.

Mirrors system/runstate.c: `qemu_system_shutdown_request` (a flag and `qemu_notify_event`, from any thread),
`main_loop_should_exit`'s shutdown branch - `qemu_system_shutdown` sends SHUTDOWN with `guest` set when the
cause is the guest's (`shutdown_caused_by_guest`), then `-no-shutdown` (`shutdown_action` pause) stops the
VM in run state `shutdown` through `vm_stop` (system/cpus.c `do_vm_stop`: the run state, pause_all_vcpus,
STOP), where without it QEMU exits - and `runstate_needs_reset`, which `qmp_cont` checks.

Departure: the model's other requests (the monitor's system_reset, powerdown) are acted on where the QMP
command runs, in the same main-loop turn with the BQL held, not one pass of main_loop_should_exit later.
"""

from __future__ import annotations

import weakref
from collections.abc import Generator
from typing import TYPE_CHECKING, Any

from .cpus import do_vm_stop
from .effects import Effect

if TYPE_CHECKING:
    from .machine import Machine

# -no-shutdown (QEMU's `-action shutdown=pause`): set by the command line (qemu_command.py); else poweroff
PAUSE_ON_SHUTDOWN: weakref.WeakSet[Machine] = weakref.WeakSet()
_SHUTDOWN_REQUESTED: weakref.WeakKeyDictionary[Machine, str] = weakref.WeakKeyDictionary()
# ShutdownCause values shutdown_caused_by_guest counts as the guest's (qapi/run-state.json)
GUEST_CAUSES = frozenset({"guest-shutdown", "guest-reset", "guest-panic"})


def qemu_system_shutdown_request(machine: Machine, cause: str) -> None:
    """system/runstate.c qemu_system_shutdown_request: remember the cause, wake the main loop."""
    _SHUTDOWN_REQUESTED[machine] = cause
    machine.main_loop_cond.broadcast()


def main_loop_should_exit(machine: Machine) -> Generator[Effect, Any, None]:
    """system/runstate.c main_loop_should_exit, its shutdown branch (the main loop, BQL held)."""
    cause = _SHUTDOWN_REQUESTED.pop(machine, None)
    if cause is None:
        return
    machine.qmp_event("SHUTDOWN", {"guest": cause in GUEST_CAUSES, "reason": cause})  # qemu_system_shutdown
    if machine in PAUSE_ON_SHUTDOWN:
        yield from vm_stop(machine, "shutdown")
    else:
        machine.quit_requested = True


def vm_stop(machine: Machine, state: str) -> Generator[Effect, Any, None]:
    """system/cpus.c vm_stop -> do_vm_stop (cpus.py): a running VM stops in `state`, then the STOP event."""
    if machine.runstate != "running":
        return
    yield from do_vm_stop(machine, state)
    machine.qmp_event("STOP", None)


def runstate_needs_reset(machine: Machine) -> bool:
    """system/runstate.c runstate_needs_reset (internal-error is not modelled)."""
    return machine.runstate == "shutdown"
