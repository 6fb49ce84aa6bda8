"""The migration thread: live migration's last step stops the VM from a thread that is not the main loop.

Mirrors migration/migration.c at upstream 77251365ec, reduced to what decides vCPU scheduling:
`qmp_migrate` starts `migration_thread`, which sends RAM without the BQL (`migration_iteration_run`, here
`migration_ram_ms` of guest time), then in `migration_completion` takes the BQL, records the run state
the destination will restore (`global_state_store`) and stops the VM (`vm_stop_force_state(
RUN_STATE_FINISH_MIGRATE)`, which ends in `pause_all_vcpus`). So the main loop and the migration thread
can both be inside `pause_all_vcpus` at once, each waiting on qemu_pause_cond with the BQL dropped: the
window of 96bce6831b and f962cac4c2.

Target-neutral except for one step, the state saved (`transfer`, the target's: `monitor.save_cpu_states`
synchronises every vCPU's registers, as `qemu_savevm_state_complete_precopy` does). The destination is
not modelled: once the state is sent the source stays stopped (`postmigrate`), its guest now running
elsewhere, and the run's work is done (`Machine.maybe_finished`).
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from typing import TYPE_CHECKING, Any

from .cpus import current_thread, vm_stop_force_state
from .effects import Block, BqlLock, BqlUnlock, Effect

if TYPE_CHECKING:
    from .machine import Machine

# The thread's name in QEMU: MIGRATION_THREAD_SRC_MAIN (migration_start_outgoing), "live_migration" before
# e620b1e477 (QEMU 9.2)
MIGRATION_THREAD = "mig/src/main"


Transfer = Callable[["Machine"], Generator[Effect, Any, None]]


def qmp_migrate(machine: Machine, uri: str, transfer: Transfer) -> None:
    """migration/migration.c qmp_migrate (detached, as QMP and `migrate -d` are): start the thread.
    `transfer` saves the stopped machine's state (the target's part)."""
    machine.migrations_active += 1

    def thread() -> Generator[Effect, Any, None]:
        yield from migration_thread(machine, uri, transfer)

    machine.start_thread(MIGRATION_THREAD, thread)


def migration_thread(machine: Machine, uri: str, transfer: Transfer) -> Generator[Effect, Any, None]:
    """migration/migration.c migration_thread: iterate without the BQL, then migration_completion."""
    current_thread.set(MIGRATION_THREAD)
    machine.trace("migration_thread_start", uri=uri)
    ram_ns = round(machine.settings.migration_ram_ms * 1_000_000)
    if ram_ns:
        yield Block((), ram_ns)
    yield BqlLock("migration_completion")
    stored = machine.runstate  # global_state_store
    machine.trace("migration_global_state", runstate=stored)
    yield from vm_stop_force_state(machine, "finish-migrate")
    yield from transfer(machine)
    machine.runstate = "postmigrate"  # migration_iteration_finish
    machine.trace("migration_completed", destination="running" if stored == "running" else stored)
    machine.migrations_active -= 1
    machine.guest_done = True  # the guest goes on on the destination
    machine.maybe_finished()
    yield BqlUnlock("migration_completion")
