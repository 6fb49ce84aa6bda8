"""Monitor commands the scenarios use, run on the main thread with the BQL held.

Mirrors system/runstate.c (the reset request handled in
`main_loop_should_exit`), migration/savevm.c (`load_snapshot`: stop, reset, load the state, start) and
monitor/hmp-cmds-target.c (`info registers`, which synchronises the monitor's current CPU).

A scenario lists (console pattern, command) pairs, like QEMU's functional tests: wait for a line on
the guest console, then type the command.

Migration is modelled as savevm + loadvm of the same machine: the CPU state saved is what
target/ppc/machine.c migrates (registers, DECR, halted, interrupt_request; not pending_interrupts);
`quiesced` is saved and restored only with the follow-up fix (`quiesced+migration`, the "cpu/rtas_stopped" subsection of
QEMU issue 3079). Without it the destination keeps the value its own reset gave, as QEMU did.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Generator
from typing import TYPE_CHECKING, Any

from ..versions import has
from .cpus import CPUState, do_vm_stop, run_on_cpu, vm_start
from .effects import Effect
from .hotplug import device_add_cpu_core
from .interrupts import hreg_store_msr
from .kvm import cpu_synchronize_state, do_kvm_cpu_synchronize_post_init, do_kvm_cpu_synchronize_pre_loadvm
from .migration import qmp_migrate
from .ppc import LPCR_HR, LPCR_UPRT, PSSCR_EC, Interrupt
from .qapi import QmpError
from .rcu import drain_call_rcu
from .runstate import qemu_system_reset, system_reset
from .timebase import cpu_ppc_store_decr

if TYPE_CHECKING:
    from .machine import Machine

COMMANDS = ("system_reset", "stop", "cont", "migrate", "migrate -d", "info registers", "device_add", "nmi")

# CPUPPCState fields in the migration stream (target/ppc/machine.c vmstate_ppc_cpu, the parts modelled).
# Not `pending_interrupts`: no version modelled carries it (its last reader, the pre-2.x loader, went
# with 8f91aca7ff, 6.2.50), so the destination has what its own reset raised (cpu_ppc_tb_reset).
_MIGRATED_ENV = ("msr", "lpcr", "psscr", "nip", "gpr3", "entry_gen", "decr", "tb_offset", "resume_as_sreset")


def monitor_command(machine: Machine, command: str) -> Generator[Effect, Any, None]:
    machine.trace("monitor_command", command=command)
    if command == "system_reset":
        yield from system_reset(machine)
    elif command == "stop":
        yield from do_vm_stop(machine, "paused")
    elif command == "cont":
        vm_start(machine)
    elif command == "migrate":
        yield from migrate(machine)
    elif command.split()[:2] == ["migrate", "-d"]:  # hmp_migrate, detached: the migration thread does it
        qmp_migrate(machine, command.split()[2] if len(command.split()) > 2 else "", save_cpu_states)
    elif command.split()[0] == "device_add":
        error = yield from qmp_device_add(machine, hmp_device_options(command))
        if error is not None:
            machine.trace("monitor_error", command=command, error=error)
    elif command == "nmi":  # hmp_nmi -> qmp_inject_nmi -> nmi_monitor_handle -> spapr_nmi
        machine.spapr.spapr_nmi()
    elif command == "info registers":
        # hmp_info_registers without -a: only the monitor's current CPU (the first) is synchronised (D12).
        yield from cpu_synchronize_state(machine.cpus[0])
    else:
        raise ValueError(f"unknown monitor command {command!r}")


def hmp_device_options(command: str) -> dict[str, Any]:
    """`device_add DRIVER,prop=value,...` as HMP reads it (numbers for numeric properties)."""
    words = command.split(maxsplit=1)
    if len(words) < 2:
        return {}
    driver, *props = words[1].split(",")
    out: dict[str, Any] = {"driver": driver}
    for prop in props:
        key, _, value = prop.partition("=")
        out[key] = int(value) if value.isdigit() else value
    return out


def qmp_device_add(machine: Machine, args: dict[str, Any]) -> Generator[Effect, Any, str | None]:
    """system/qdev-monitor.c qmp_device_add at upstream 77251365ec: qdev_device_add_from_qdict - of the
    device types only a pseries CPU core (hotplug.py) and an x86 CPU (x86/machine.py) are modelled - and on
    failure drain_call_rcu (since 7bed89958b), which waits for every pending RCU callback with the BQL
    dropped. Returns the error QEMU reports (in QEMU 7.2's words), or None."""
    driver = args.get("driver")
    error: str | None = None
    if driver is None:
        error = "Parameter 'driver' is missing"
    elif machine.x86 is not None and str(driver).endswith("-x86_64-cpu"):
        from .x86.machine import device_add_x86_cpu

        try:
            yield from device_add_x86_cpu(machine, args)
        except QmpError as e:
            error = e.desc
    elif (not str(driver).endswith("-spapr-cpu-core") or machine.s390 is not None or machine.pnv is not None
          or machine.x86 is not None):
        error = f"'{driver}' is not a valid device model name"
    else:
        try:
            yield from device_add_cpu_core(machine, args)
        except QmpError as e:
            error = e.desc
    if error is not None:
        yield from drain_call_rcu(machine)
    return error


def cpu_post_load_infer_quiesced(cpu: CPUState) -> None:
    """target/ppc/machine.c cpu_post_load since 628bda1ab7 (January 2026), when the CPU's
    `rtas-stopped-state` property is false (machine types pseries-10.0 and older, and streams from QEMU
    < 10.0, which carry no quiesced): quiesced is inferred - a halted CPU is quiesced if PSSCR[EC] and
    any of the class's LPCR power-management bits are set, any other CPU is not. Modelled as upstream
    writes it, whatever it concludes. `infer_fix` (a what-if, not upstream) asks for EC and *no* PM bit:
    what spapr_reset_vcpu and rtas_stop_self leave (EC set, PM cleared), where spapr_cpu_set_entry_state
    sets the PM bits of every CPU it starts - the boot CPU, whose EC nothing clears, included."""
    env = cpu.env
    if cpu.halted:
        pm = bool(env.lpcr & env.model.lpcr_pm)
        env.quiesced = bool(env.psscr & PSSCR_EC) and (not pm if cpu.machine.settings.infer_fix else pm)
    else:
        env.quiesced = False
    cpu.machine.trace("cpu_post_load_infer_quiesced", cpu=cpu.cpu_index, halted=cpu.halted,
                      psscr_ec=bool(env.psscr & PSSCR_EC), lpcr_pm=hex(env.lpcr & env.model.lpcr_pm),
                      quiesced=env.quiesced)


def migrate(machine: Machine) -> Generator[Effect, Any, None]:
    """migration/savevm.c save, then load_snapshot in QEMU's order (review D3): stop, reset,
    cpu_synchronize_all_pre_loadvm (KVM: every vCPU dirty, so no get until the state is put back), load
    each CPU and run target/ppc/machine.c cpu_post_load (its post_load_update_msr stores MSR through
    hreg_store_msr, which re-evaluates HARD from the loaded state), spapr_post_load (KVM radix:
    spapr_set_all_lpcrs, whose do_lpcr_sync does no get on a dirty vCPU), then
    cpu_synchronize_all_post_init and start."""
    yield from do_vm_stop(machine, "paused")
    yield from savevm_loadvm(machine)
    vm_start(machine)


def save_cpu_states(machine: Machine) -> Generator[Effect, Any, None]:
    """The CPU part of qemu_savevm_state_complete_precopy: cpu_synchronize_all_states, one register get
    per vCPU (a run_on_cpu under KVM)."""
    for cpu in machine.cpus:
        yield from cpu_synchronize_state(cpu)


def savevm_loadvm(machine: Machine) -> Generator[Effect, Any, None]:
    """The stopped machine's state saved, the machine reset as a destination is, the state loaded."""
    saved = []
    for cpu in machine.cpus:
        yield from cpu_synchronize_state(cpu)
        env = {name: getattr(cpu.env, name) for name in _MIGRATED_ENV}
        guest = machine.kvm.guest_state(cpu.cpu_index) if machine.kvm is not None else {}
        saved.append((cpu.halted, cpu.interrupt_request, env, cpu.env.quiesced, guest))
    fwnmi = machine.spapr.fwnmi_system_reset_addr
    yield from qemu_system_reset(machine)
    machine.spapr.fwnmi_system_reset_addr = fwnmi  # hw/ppc/spapr.c vmstate_spapr_fwnmi
    if machine.kvm is not None:  # cpu_synchronize_all_pre_loadvm
        for cpu in machine.cpus:
            yield from run_on_cpu(cpu, do_kvm_cpu_synchronize_pre_loadvm, "do_kvm_cpu_synchronize_pre_loadvm")
    for cpu, (halted, irq_request, env, quiesced, guest) in zip(machine.cpus, saved, strict=True):
        if machine.kvm is not None:
            machine.kvm.load_guest_state(cpu.cpu_index, guest)  # guest memory and PC come back too
        cpu.halted = halted  # vmstate_cpu_common
        cpu.interrupt_request = irq_request
        cpu.env = dataclasses.replace(cpu.env, **env)
        if machine.fix_migration:
            if machine.settings.rtas_stopped_state:
                cpu.env.quiesced = quiesced  # the "cpu/rtas_stopped" subsection, loaded before post_load
            else:
                cpu_post_load_infer_quiesced(cpu)
        hreg_store_msr(cpu, cpu.env.msr)  # cpu_post_load -> post_load_update_msr -> ppc_store_msr
        if machine.settings.accel == "tcg" and has(machine.settings.qemu_version, "578912ad73"):
            # cpu_post_load since 578912ad73 (8.2): TCG re-arms the level-triggered DEC from the saved DECR,
            # raising or lowering it; before it, the destination's reset left it as it was.
            cpu_ppc_store_decr(cpu, cpu.env.decr)
        machine.trace("cpu_post_load", cpu=cpu.cpu_index, halted=halted, quiesced=cpu.env.quiesced,
                      dec_pending=cpu.env.pending(Interrupt.DECR))
    if machine.kvm is not None and machine.kvm.radix:  # spapr_post_load
        yield from machine.spapr.spapr_set_all_lpcrs(LPCR_HR | LPCR_UPRT, LPCR_HR | LPCR_UPRT, "spapr_post_load")
    if machine.kvm is not None:  # cpu_synchronize_all_post_init
        for cpu in machine.cpus:
            yield from run_on_cpu(cpu, do_kvm_cpu_synchronize_post_init, "do_kvm_cpu_synchronize_post_init")
