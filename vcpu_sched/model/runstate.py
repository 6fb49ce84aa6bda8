"""The shutdown and reset requests the main loop acts on, the reset itself, and what the run state refuses.

Mirrors system/runstate.c: `qemu_system_shutdown_request` and `qemu_system_reset_request` (a flag and
`qemu_notify_event`, from any thread; the calling vCPU stops itself with `cpu_stop_current`), `qemu_system_reset`,
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

from .cpus import cpu_stop_current, do_vm_stop, pause_all_vcpus, resume_all_vcpus
from .effects import Effect

if TYPE_CHECKING:
    from .machine import Machine

# -no-shutdown (QEMU's `-action shutdown=pause`): set by the command line (qemu_command.py); else poweroff
PAUSE_ON_SHUTDOWN: weakref.WeakSet[Machine] = weakref.WeakSet()
_SHUTDOWN_REQUESTED: weakref.WeakKeyDictionary[Machine, str] = weakref.WeakKeyDictionary()
_RESET_REQUESTED: weakref.WeakKeyDictionary[Machine, str] = weakref.WeakKeyDictionary()
# ShutdownCause values shutdown_caused_by_guest counts as the guest's (qapi/run-state.json)
GUEST_CAUSES = frozenset({"guest-shutdown", "guest-reset", "guest-panic"})


def qemu_system_shutdown_request(machine: Machine, cause: str) -> None:
    """system/runstate.c qemu_system_shutdown_request: remember the cause, wake the main loop."""
    _SHUTDOWN_REQUESTED[machine] = cause
    machine.main_loop_cond.broadcast()


def qemu_system_reset_request(machine: Machine, cause: str) -> None:
    """system/runstate.c qemu_system_reset_request (reboot action reset): remember the cause, stop the
    calling vCPU (cpu_stop_current), wake the main loop."""
    _RESET_REQUESTED[machine] = cause
    cpu_stop_current(machine)
    machine.main_loop_cond.broadcast()


def qemu_system_reset(machine: Machine) -> Generator[Effect, Any, None]:
    """system/runstate.c qemu_system_reset: machine reset, then put the reset state into KVM."""
    machine.trace("qemu_system_reset")
    yield from machine.arch.machine_reset(machine)


def system_reset(machine: Machine) -> Generator[Effect, Any, None]:
    """main_loop_should_exit's reset branch (also what the monitor's system_reset leads to): pause every
    vCPU, reset the machine - the guest boots again from scratch - and resume them."""
    yield from pause_all_vcpus(machine)
    machine.guest_memory.reset()
    yield from qemu_system_reset(machine)
    resume_all_vcpus(machine)


def main_loop_should_exit(machine: Machine) -> Generator[Effect, Any, None]:
    """system/runstate.c main_loop_should_exit, its shutdown and reset branches (the main loop, BQL held)."""
    cause = _SHUTDOWN_REQUESTED.pop(machine, None)
    if cause is not None:
        machine.qmp_event("SHUTDOWN", {"guest": cause in GUEST_CAUSES, "reason": cause})  # qemu_system_shutdown
        if machine in PAUSE_ON_SHUTDOWN:
            yield from vm_stop(machine, "shutdown")
        else:
            machine.quit_requested = True
    cause = _RESET_REQUESTED.pop(machine, None)
    if cause is not None:
        yield from system_reset(machine)
        machine.qmp_event("RESET", {"guest": cause in GUEST_CAUSES, "reason": cause})


def vm_stop(machine: Machine, state: str) -> Generator[Effect, Any, None]:
    """system/cpus.c vm_stop -> do_vm_stop (cpus.py): a running VM stops in `state`, then the STOP event."""
    if machine.runstate != "running":
        return
    yield from do_vm_stop(machine, state)
    machine.qmp_event("STOP", None)


def runstate_needs_reset(machine: Machine) -> bool:
    """system/runstate.c runstate_needs_reset (internal-error is not modelled)."""
    return machine.runstate == "shutdown"
