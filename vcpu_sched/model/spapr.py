"""The pseries machine: CPU reset and entry, LPCR sync to every CPU, hcalls and the RTAS CPU calls.

Mirrors hw/ppc/spapr_cpu_core.c (`spapr_reset_vcpu`, `spapr_cpu_set_entry_state`), hw/ppc/spapr.c
(`spapr_machine_reset`, `spapr_set_all_lpcrs`, `do_lpcr_sync`), hw/ppc/spapr_hcall.c
(`spapr_hypercall`, `h_set_mode`, `h_rtas`, `h_cede`, `h_signal_sys_reset`), hw/ppc/spapr_rtas.c
(`rtas_query_cpu_stopped_state`, `rtas_start_cpu`, `rtas_stop_self`, `rtas_power_off`), hw/ppc/spapr_events.c
(the RTAS event log: `spapr_powerdown_req`, `spapr_hotplug_req_add_by_index`, `check_exception`) and
hw/char/spapr_vty.c (`h_put_term_char`).

The seed's fix touches three places here, each under `machine.fix_quiesced`: reset and stop-self set
`quiesced` ("RTAS stopped"), entry clears it, each followed by `ppc_maybe_interrupt`; and
query-cpu-stopped-state answers from `quiesced` instead of `halted`.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .cpus import (
    EXCP_HLT,
    CPUState,
    async_run_on_cpu,
    cpu_exit,
    cpu_has_work,
    cpu_stop_current,
    current_cpu,
    exit_or_kick,
    kick_by_exit,
    qemu_cpu_kick,
    run_on_cpu,
)
from .effects import Effect
from .guest import Hcall, RtasArgs
from .interrupts import ppc_cpu_do_system_reset, ppc_cpu_reset_hold, ppc_maybe_interrupt, ppc_set_irq, ppc_store_lpcr
from .kvm import (
    cpu_synchronize_state,
    do_kvm_cpu_synchronize_post_reset,
    do_kvm_cpu_synchronize_state,
    kvm_vcpu_enable_cap,
    kvm_vcpu_ioctl,
)
from .ppc import (
    LOGICAL_PVR,
    LPCR_AIL,
    LPCR_AIL_SHIFT,
    LPCR_GTSE,
    LPCR_HR,
    LPCR_ILE,
    LPCR_ISL,
    LPCR_KBV,
    LPCR_LD,
    LPCR_LPES0,
    LPCR_LPES1,
    LPCR_UPRT,
    LPCR_VPM1,
    MSR_EE,
    MSR_FP,
    MSR_ME,
    MSR_SF,
    PSSCR_EC,
    Interrupt,
)
from .runstate import qemu_system_reset_request, qemu_system_shutdown_request
from .spapr_abi import (
    H_CEDE,
    H_EOI,
    H_FUNCTION,
    H_IPI,
    H_NOOP,
    H_P2,
    H_P3,
    H_P4,
    H_PARAMETER,
    H_PUT_TERM_CHAR,
    H_REGISTER_PROC_TBL,
    H_REGISTER_VPA,
    H_SET_MODE,
    H_SET_MODE_RESOURCE_ADDR_TRANS_MODE,
    H_SET_MODE_RESOURCE_LE,
    H_SIGNAL_SYS_RESET,
    H_SIGNAL_SYS_RESET_ALLBUTSELF,
    H_SUCCESS,
    H_UNSUPPORTED_FLAG,
    H_WATCHDOG,
    HCALL_NAMES,
    KVMPPC_H_CAS,
    KVMPPC_H_RTAS,
    PROC_TBL_GTSE,
    PROC_TBL_RADIX,
    PROC_TBL_REGISTER,
    PSERIES_HP_ELOG_ACTION_ADD,
    PSERIES_HP_ELOG_RESOURCE_CPU,
    PSERIES_WDTF_ACTION_DUMP_RESTART,
    PSERIES_WDTF_ACTION_HARD_POWER_OFF,
    PSERIES_WDTF_ACTION_HARD_RESTART,
    PSERIES_WDTF_LEAVE_OTHER,
    PSERIES_WDTF_OP_START,
    PSERIES_WDTF_OP_STOP,
    RTAS_CHECK_EXCEPTION,
    RTAS_EPOW_WARNING,
    RTAS_HOTPLUG_EVENTS,
    RTAS_IBM_NMI_REGISTER,
    RTAS_LOG_TYPE_EPOW,
    RTAS_LOG_TYPE_HOTPLUG,
    RTAS_LOG_V6_EPOW_ACTION_SYSTEM_SHUTDOWN,
    RTAS_LOG_V6_EPOW_MODIFIER_NORMAL,
    RTAS_NAMES,
    RTAS_OUT_NO_ERRORS_FOUND,
    RTAS_POWER_OFF,
    RTAS_QUERY_CPU_STOPPED_STATE,
    RTAS_START_CPU,
    RTAS_STOP_SELF,
    RTAS_SYSTEM_REBOOT,
    SPAPR_ENTRY_POINT,
    WDT_MAX_WATCHDOGS,
)
from .timebase import cpu_ppc_tb_reset

if TYPE_CHECKING:
    from .machine import Machine

RTAS_OUT_SUCCESS, RTAS_OUT_HW_ERROR, RTAS_OUT_PARAM_ERROR = 0, -1, -3
# hw/ppc/spapr_events.c: each log type's event class (EVENT_CLASS_EPOW, EVENT_CLASS_HOT_PLUG) by its mask; the
# guest negotiates the dedicated hotplug source at CAS (OV5_HP_EVT), as Linux does: not the EPOW fallback
EVENT_SOURCE_MASKS = {RTAS_LOG_TYPE_EPOW: RTAS_EPOW_WARNING, RTAS_LOG_TYPE_HOTPLUG: RTAS_HOTPLUG_EVENTS}
EVENT_TARGET_CPU = 0  # the CPU the event sources' interrupts are routed to (departure: Linux picks one)
WDT_MIN_TIMEOUT_MS = 1  # hw/watchdog/spapr_watchdog.c


@dataclass(eq=False, repr=False)
class SpaprWatchdog:
    """hw/watchdog/spapr_watchdog.c SpaprWatchdog: the timeout action and whether the others keep running
    (its QEMU_CLOCK_VIRTUAL timer is the machine's timer `wdt<N>`)."""

    action: int = 0
    leave_others: bool = False


@dataclass(eq=False, repr=False)
class SpaprEventLogEntry:
    """hw/ppc/spapr_events.c SpaprEventLogEntry: the log type (of `summary`) and the extended log's fields the
    guest reads, by name (the EPOW section's sensor_value and event_modifier; the hotplug section's
    resource, action and DRC index)."""

    log_type: int
    fields: dict[str, int]


@dataclass(eq=False, repr=False)
class Spapr:
    """SpaprMachineState: the machine-level code paths of pseries."""

    machine: Machine
    fwnmi_system_reset_addr: int = -1  # set by ibm,nmi-register; -1: none (deliver to 0x100)
    wds: list[SpaprWatchdog] = field(default_factory=lambda: [SpaprWatchdog() for _ in range(WDT_MAX_WATCHDOGS)])
    pending_events: list[SpaprEventLogEntry] = field(default_factory=list)  # the RTAS event log, oldest first

    # --- reset and entry (spapr_cpu_core.c) -------------------------------------------------------

    def spapr_reset_vcpu(self, cpu: CPUState) -> None:
        """hw/ppc/spapr_cpu_core.c spapr_reset_vcpu, in QEMU's order."""
        env = cpu.env
        ppc_cpu_reset_hold(cpu)
        if self.machine.fix_quiesced:
            env.quiesced = True  # the fix: set "RTAS stopped" state
            ppc_maybe_interrupt(cpu)
        env.msr = (env.msr & ~MSR_SF) | MSR_ME | MSR_FP
        lpcr = env.lpcr & ~(LPCR_VPM1 | LPCR_ISL | LPCR_KBV | env.model.lpcr_pm)
        lpcr |= LPCR_LPES0 | LPCR_LPES1
        env.psscr |= PSSCR_EC
        self.spapr_store_lpcr(cpu, lpcr)
        self.cap_large_decr_cpu_apply(cpu)  # spapr_caps_cpu_apply
        cpu_ppc_tb_reset(cpu)
        self.machine.trace("spapr_reset_vcpu", cpu=cpu.cpu_index, halted=cpu.halted, quiesced=env.quiesced)

    def cap_large_decr_cpu_apply(self, cpu: CPUState) -> None:
        """hw/ppc/spapr_caps.c cap_large_decr_cpu_apply (review D4): cap-large-decr is on by default for
        pseries; under KVM kvmppc_enable_cap_large_decr sets LD in the vcore through the 64-bit LPCR
        register, then QEMU's own LPCR gets LD. POWER8 has no large decrementer (QEMU wants
        cap-large-decr=off there): not applied."""
        if not cpu.env.model.mmu_v3:
            return
        kvm = self.machine.kvm
        if kvm is not None:
            vcpu = kvm.vcpus[cpu.cpu_index]
            kvm.kvmppc_set_lpcr(vcpu, vcpu.vcore.lpcr | LPCR_LD, preserve_top32=False)
        self.spapr_store_lpcr(cpu, cpu.env.lpcr | LPCR_LD)

    def spapr_cpu_set_entry_state(self, cpu: CPUState, nip: int, r1: int, r3: int, r4: int) -> None:
        """hw/ppc/spapr_cpu_core.c spapr_cpu_set_entry_state."""
        env = cpu.env
        env.nip, env.gpr3 = nip, r3
        env.entry_gen += 1
        self.kvmppc_set_reg_ppc_online(cpu, 1)
        cpu.halted = False
        self.spapr_store_lpcr(cpu, env.lpcr | env.model.lpcr_pm)
        if self.machine.fix_quiesced:
            env.quiesced = False  # the fix: clear "RTAS stopped" state
            ppc_maybe_interrupt(cpu)
        self.machine.trace("spapr_cpu_set_entry_state", cpu=cpu.cpu_index, nip=hex(nip), quiesced=env.quiesced)

    def spapr_store_lpcr(self, cpu: CPUState, lpcr: int) -> None:
        """Every LPCR store spapr makes goes through here; upstream each is a plain ppc_store_lpcr.

        With the what-if fix `lpcr-sync` - not upstream code: the patch author's suggestion that "spapr
        should synchronize its LPCR properly with KVM, and not try to use values that KVM does not
        support" - the value is first made what KVM accepts under KVM (FakeKvm.accepted_lpcr), so spapr
        never holds wake-up (PECE) bits cleared that the next register get would bring back. TCG has no
        KVM to agree with: nothing changes there."""
        kvm = self.machine.kvm
        if self.machine.fix_lpcr_sync and kvm is not None:
            lpcr = kvm.accepted_lpcr(kvm.vcpus[cpu.cpu_index], lpcr)
        ppc_store_lpcr(cpu, lpcr)

    def kvmppc_set_reg_ppc_online(self, cpu: CPUState, online: int) -> None:
        """target/ppc/kvm.c kvmppc_set_reg_ppc_online (KVM_REG_PPC_ONLINE)."""
        if self.machine.kvm is not None:
            self.machine.kvm.vcpus[cpu.cpu_index].online = online

    # --- machine reset and LPCR sync (spapr.c) ----------------------------------------------------

    def spapr_machine_reset(self) -> Generator[Effect, Any, None]:
        """hw/ppc/spapr.c spapr_machine_reset (the parts that touch CPUs), on the main thread."""
        machine = self.machine
        self.fwnmi_system_reset_addr = -1
        self.pending_events.clear()  # spapr_clear_pending_events
        if machine.kvm is not None and machine.kvm.radix:
            yield from self.spapr_set_all_lpcrs(LPCR_HR | LPCR_UPRT, LPCR_HR | LPCR_UPRT, "machine reset (radix)")
        for cpu in machine.cpus:
            cpu.env.compat_pvr = 0  # ppc_init_compat_all(max_compat_pvr = 0): raw mode until CAS
        for cpu in machine.cpus:  # qemu_devices_reset -> spapr_cpu_core_reset
            self.spapr_reset_vcpu(cpu)
        self.spapr_cpu_set_entry_state(machine.cpus[0], SPAPR_ENTRY_POINT, 0, 0, 0)

    def do_client_architecture_support(self, cpu: CPUState, pvrs: tuple[int, ...]) -> Generator[Effect, Any, int]:
        """hw/ppc/spapr_hcall.c do_client_architecture_support (QF :1165, :1191-1206): `cas_check_pvr` picks
        the newest logical PVR the guest lists that the CPU supports; if it is not the compatibility mode
        already in force (none after a reset), `ppc_set_compat_all` switches every vCPU to it."""
        own = LOGICAL_PVR[cpu.env.model.name]
        best = max((pvr for pvr in pvrs if pvr <= own and pvr in LOGICAL_PVR.values()), default=0)
        self.machine.trace("spapr_cas_pvr", cpu=cpu.cpu_index, cur_pvr=hex(cpu.env.compat_pvr), new_pvr=hex(best))
        if best != cpu.env.compat_pvr:
            yield from self.ppc_set_compat_all(best)
        return H_SUCCESS

    def ppc_set_compat_all(self, compat_pvr: int) -> Generator[Effect, Any, None]:
        """target/ppc/compat.c ppc_set_compat_all (QF :222): run_on_cpu(do_set_compat) on every vCPU."""
        for target in self.machine.cpus:
            yield from run_on_cpu(target, lambda c: self.do_set_compat(c, compat_pvr), "do_set_compat")

    def ppc_set_compat(self, cpu: CPUState, compat_pvr: int) -> Generator[Effect, Any, None]:
        """target/ppc/compat.c ppc_set_compat called off the target's thread (77251365ec: hw/ppc/spapr.c
        `spapr_core_plug` calls it from the main thread for each hotplugged thread, with the boot CPU's
        mode): `cpu_synchronize_state` is then a run_on_cpu register get (the BQL dropped while the main
        thread waits), unless the vCPU is already dirty. The get *assigns* KVM's LPCR and PSSCR into env
        and nothing calls ppc_maybe_interrupt afterwards. Then, under KVM and for a new mode,
        kvmppc_set_compat: KVM_SET_ONE_REG(KVM_REG_PPC_ARCH_COMPAT), a vCPU ioctl from this thread, which
        waits for the vCPU's mutex while it is inside KVM_RUN."""
        yield from cpu_synchronize_state(cpu)
        if self.machine.kvm is not None and cpu.env.compat_pvr != compat_pvr:
            yield from kvm_vcpu_ioctl(cpu, "KVM_SET_ONE_REG(KVM_REG_PPC_ARCH_COMPAT)")
        cpu.env.compat_pvr = compat_pvr

    def do_set_compat(self, cpu: CPUState, compat_pvr: int) -> None:
        """target/ppc/compat.c ppc_set_compat (QF :172), on the target's thread: cpu_synchronize_state - a
        KVM register get, LPCR and PSSCR included, with no ppc_maybe_interrupt - then the new mode (the
        PCR it implies is not modelled)."""
        if self.machine.kvm is not None:
            do_kvm_cpu_synchronize_state(cpu)
        cpu.env.compat_pvr = compat_pvr

    def spapr_set_all_lpcrs(self, value: int, mask: int, why: str) -> Generator[Effect, Any, None]:
        """hw/ppc/spapr.c spapr_set_all_lpcrs: run_on_cpu(do_lpcr_sync) on every CPU, one after another."""
        self.machine.trace("spapr_set_all_lpcrs", value=hex(value), mask=hex(mask),
                           caller=self.machine.thread_name(), why=why)
        for cpu in self.machine.cpus:
            yield from run_on_cpu(cpu, lambda c: self.do_lpcr_sync(c, value, mask), "do_lpcr_sync")

    def do_lpcr_sync(self, cpu: CPUState, value: int, mask: int) -> None:
        """hw/ppc/spapr.c do_lpcr_sync, on the target's thread: sync, then store (maybe_interrupt)."""
        if self.machine.kvm is not None:
            # cpu_synchronize_state on the CPU's own thread: run_on_cpu runs it at once.
            do_kvm_cpu_synchronize_state(cpu)
        self.spapr_store_lpcr(cpu, (cpu.env.lpcr & ~mask) | value)

    def cpu_synchronize_all_post_reset(self) -> Generator[Effect, Any, None]:
        """system/cpus.c cpu_synchronize_all_post_reset (KVM: put the reset state into the kernel)."""
        if self.machine.kvm is None:
            return
        for cpu in self.machine.cpus:
            yield from run_on_cpu(cpu, do_kvm_cpu_synchronize_post_reset, "do_kvm_cpu_synchronize_post_reset")

    # --- hcalls (spapr_hcall.c) --------------------------------------------------------------------

    def spapr_hypercall(self, cpu: CPUState, hc: Hcall) -> Generator[Effect, Any, int]:
        """hw/ppc/spapr_hcall.c spapr_hypercall (called with the BQL held)."""
        name = HCALL_NAMES.get(hc.nr, hex(hc.nr))
        self.machine.trace("spapr_hypercall", cpu=cpu.cpu_index, hcall=name, args=[hex(a) for a in hc.args])
        cpu.count(f"hcall:{name}")
        if hc.nr == H_SET_MODE:
            return (yield from self.h_set_mode(cpu, *hc.args))
        if hc.nr == KVMPPC_H_RTAS:
            assert hc.rtas is not None
            yield from self.h_rtas(cpu, hc.rtas)
            return H_SUCCESS
        if hc.nr == H_PUT_TERM_CHAR:
            self.machine.console(cpu, hc.text)
            return H_SUCCESS
        if hc.nr == KVMPPC_H_CAS:
            return (yield from self.do_client_architecture_support(cpu, hc.args))
        if hc.nr == H_CEDE:
            return self.h_cede(cpu)
        if hc.nr == H_IPI:
            return self.icp_ipi(hc.args[0])
        if hc.nr == H_EOI:
            ppc_set_irq(cpu, Interrupt.EXT, False)
            return H_SUCCESS
        if hc.nr == H_REGISTER_VPA:
            return H_SUCCESS
        if hc.nr == H_REGISTER_PROC_TBL:
            return (yield from self.h_register_process_table(hc.args[0]))
        if hc.nr == H_SIGNAL_SYS_RESET:
            return (yield from self.h_signal_sys_reset(cpu, hc.args[0]))
        if hc.nr == H_WATCHDOG:
            return self.h_watchdog(*hc.args)
        return H_FUNCTION

    def h_signal_sys_reset(self, cpu: CPUState, target: int) -> Generator[Effect, Any, int]:
        """hw/ppc/spapr_hcall.c h_signal_sys_reset: a system reset on one CPU, on all, or on all but the
        caller (Linux's NMI IPI), each by run_on_cpu. a1c2dfee4f ("ppc/spapr: Skip system reset for
        quiesced CPUs", May 2026; `sysreset_fix`) leaves RTAS-stopped CPUs out of the broadcast only: the
        unicast branch still resets the CPU it names, quiesced or not (77251365ec, spapr_hcall.c). There
        `nmi_fix` - a what-if, not upstream code - skips a quiesced target and answers H_SUCCESS, as the
        broadcast skips one."""
        if target >= 0:
            found = self.spapr_find_cpu(target)
            if found is None:
                return H_PARAMETER
            if not (self.machine.settings.nmi_fix and found.env.quiesced):
                yield from run_on_cpu(found, self._sysreset_by_unicast, "spapr_do_system_reset_on_cpu")
            return H_SUCCESS
        if target < H_SIGNAL_SYS_RESET_ALLBUTSELF:
            return H_PARAMETER
        for other in list(self.machine.cpus):
            if target == H_SIGNAL_SYS_RESET_ALLBUTSELF and other is cpu:
                continue
            if self.machine.settings.sysreset_fix and other.env.quiesced:
                continue
            yield from run_on_cpu(other, self._sysreset_by_hcall, "spapr_do_system_reset_on_cpu")
        return H_SUCCESS

    def _sysreset_by_hcall(self, cpu: CPUState) -> None:
        self.spapr_do_system_reset_on_cpu(cpu, "H_SIGNAL_SYS_RESET")

    def _sysreset_by_unicast(self, cpu: CPUState) -> None:
        self.spapr_do_system_reset_on_cpu(cpu, "H_SIGNAL_SYS_RESET unicast")

    def _sysreset_by_nmi(self, cpu: CPUState) -> None:
        self.spapr_do_system_reset_on_cpu(cpu, "spapr_nmi")

    def _sysreset_by_watchdog(self, cpu: CPUState) -> None:
        self.spapr_do_system_reset_on_cpu(cpu, "spapr_watchdog")

    def spapr_nmi(self) -> None:
        """hw/ppc/spapr.c spapr_nmi (the NMI interface behind HMP `nmi`, QMP `inject-nmi`, `virsh
        inject-nmi`): a system reset queued on every CPU, nobody waiting. a1c2dfee4f left it as it was;
        `nmi_fix` is a what-if, not upstream code: the same quiesced check here."""
        self._system_reset_all_async(self._sysreset_by_nmi)

    def _system_reset_all_async(self, func: Callable[[CPUState], None]) -> None:
        """CPU_FOREACH async_run_on_cpu(spapr_do_system_reset_on_cpu): spapr_nmi's loop, and the spapr
        watchdog's dump-restart loop, which is the same (77251365ec). Neither checks quiesced upstream;
        `nmi_fix` (what-if) skips RTAS-stopped CPUs in both."""
        for cpu in self.machine.cpus:
            if self.machine.settings.nmi_fix and cpu.env.quiesced:
                continue
            async_run_on_cpu(cpu, func, "spapr_do_system_reset_on_cpu")

    def spapr_do_system_reset_on_cpu(self, cpu: CPUState, by: str) -> None:
        """hw/ppc/spapr.c spapr_do_system_reset_on_cpu, on the target's thread: sync the registers, take
        the system reset (`ppc_cpu_do_system_reset`: the CPU is no longer halted; `quiesced` is not
        touched), and enter the guest's FWNMI handler if it registered one. The save area that r3 points
        to is not modelled."""
        if self.machine.kvm is not None:
            do_kvm_cpu_synchronize_state(cpu)
        ppc_cpu_do_system_reset(cpu)
        if self.fwnmi_system_reset_addr != -1:
            cpu.env.nip = self.fwnmi_system_reset_addr
        cpu.env.entry_gen += 1
        self.machine.trace("spapr_do_system_reset_on_cpu", cpu=cpu.cpu_index, nip=hex(cpu.env.nip),
                           quiesced=cpu.env.quiesced, by=by)

    # --- the PAPR watchdog (hw/watchdog/spapr_watchdog.c) -------------------------------------------

    def h_watchdog(self, flags: int, number: int = 0, timeout_ms: int = 0, *_: int) -> int:
        """hw/watchdog/spapr_watchdog.c h_watchdog, the start and stop operations (the two queries answer
        H_SUCCESS with no capability word: the model's guest does not read one). Start arms watchdog
        `number` (1-based) to expire `timeout_ms` of virtual time from now, with its action; a start on
        an armed watchdog re-arms it, which is how Linux's pseries-wdt pings it. Departure: watchdog
        number 0 is refused with H_P2 (upstream indexes wds[-1])."""
        if flags >> 17:  # the reserved bits 0-46
            return H_PARAMETER
        operation, action = (flags >> 8) & 0xFF, flags & 0xFF
        if operation == PSERIES_WDTF_OP_START >> 8:
            if not 1 <= number <= WDT_MAX_WATCHDOGS:
                return H_P2
            if timeout_ms <= WDT_MIN_TIMEOUT_MS:
                return H_P3
            if action not in (PSERIES_WDTF_ACTION_HARD_POWER_OFF, PSERIES_WDTF_ACTION_HARD_RESTART,
                              PSERIES_WDTF_ACTION_DUMP_RESTART):
                return H_PARAMETER
            w = self.wds[number - 1]
            w.action, w.leave_others = action, bool(flags & PSERIES_WDTF_LEAVE_OTHER)
            machine = self.machine
            machine.timer_mod(f"wdt{number}", machine.now_ns() + timeout_ms * 1_000_000,
                              lambda: self.watchdog_expired(number))
            return H_SUCCESS
        if operation == PSERIES_WDTF_OP_STOP >> 8:
            if number == (1 << 64) - 1 or number == -1:  # PSERIES_WDT_STOP_ALL
                return self.watchdog_stop_all()
            if not 1 <= number <= WDT_MAX_WATCHDOGS:
                return H_P2
            return self.watchdog_stop(number)
        if operation in (3, 4):  # the two queries
            return H_SUCCESS
        return H_PARAMETER

    def watchdog_stop(self, number: int) -> int:
        """spapr_watchdog.c watchdog_stop: H_SUCCESS if it was armed, else H_NOOP."""
        return H_SUCCESS if self.machine.timer_del(f"wdt{number}") else H_NOOP

    def watchdog_stop_all(self) -> int:
        """spapr_watchdog.c watchdog_stop_all."""
        for number in range(1, WDT_MAX_WATCHDOGS + 1):
            self.watchdog_stop(number)
        return H_NOOP  # upstream keeps H_NOOP unless a stop answers something else than H_NOOP/H_SUCCESS

    def watchdog_expired(self, number: int) -> None:
        """spapr_watchdog.c watchdog_expired, a timer callback on the main loop with the BQL held. The
        dump-restart action resets every CPU as spapr_nmi does - quiesced ones too (77251365ec: no check;
        a1c2dfee4f did not touch it); `nmi_fix` (what-if) skips them. Departure: power-off and hard
        restart (qemu_system_vmstop_request, qemu_system_reset_request) are traced only: nothing in the
        model's guests asks for them."""
        w = self.wds[number - 1]
        if w.action == PSERIES_WDTF_ACTION_DUMP_RESTART:
            self._system_reset_all_async(self._sysreset_by_watchdog)
        if not w.leave_others:
            self.watchdog_stop_all()

    def h_register_process_table(self, flags: int) -> Generator[Effect, Any, int]:
        """hw/ppc/spapr_hcall.c h_register_process_table (review D8): for a radix guest, the LPCR's radix
        bits on every vCPU through spapr_set_all_lpcrs - a caller of the hang mechanism like H_SET_MODE's,
        under KVM too (before kvmppc_configure_v3_mmu, whose ioctl is not modelled). Only registering is
        modelled, not the table itself."""
        if not flags & PROC_TBL_REGISTER or not flags & PROC_TBL_RADIX:
            return H_SUCCESS  # a hash guest's table, or a de-registration: no LPCR change modelled
        update = LPCR_UPRT | LPCR_HR | (LPCR_GTSE if flags & PROC_TBL_GTSE else 0)
        yield from self.spapr_set_all_lpcrs(update, LPCR_UPRT | LPCR_HR | LPCR_GTSE, "H_REGISTER_PROC_TBL (radix)")
        return H_SUCCESS

    def h_set_mode(self, cpu: CPUState, mflags: int, resource: int, value1: int,
                   value2: int) -> Generator[Effect, Any, int]:
        """hw/ppc/spapr_hcall.c h_set_mode -> h_set_mode_resource_le / _addr_trans_mode."""
        if resource == H_SET_MODE_RESOURCE_LE:
            if value1:
                return H_P3
            if value2:
                return H_P4
            if mflags == 0:
                yield from self.spapr_set_all_lpcrs(0, LPCR_ILE, "H_SET_MODE resource 4 (big-endian)")
            elif mflags == 1:
                yield from self.spapr_set_all_lpcrs(LPCR_ILE, LPCR_ILE, "H_SET_MODE resource 4 (little-endian)")
            else:
                return H_UNSUPPORTED_FLAG
            return H_SUCCESS
        if resource == H_SET_MODE_RESOURCE_ADDR_TRANS_MODE:
            if value1:
                return H_P3
            if value2:
                return H_P4
            if mflags not in (0, 3):  # mode 3 needs cap-ail-mode-3, on by default for pseries
                return H_UNSUPPORTED_FLAG
            yield from self.spapr_set_all_lpcrs(mflags << LPCR_AIL_SHIFT, LPCR_AIL,
                                                f"H_SET_MODE resource 3 (AIL={mflags})")
            return H_SUCCESS
        return H_P2

    def icp_ipi(self, server: int) -> int:
        """hw/intc/xics.c icp_set_mfrr via h_ipi (emulated XICS, TCG): raise EXT on the target."""
        target = self.spapr_find_cpu(server)
        if target is None:
            return H_PARAMETER
        ppc_set_irq(target, Interrupt.EXT, True)
        return H_SUCCESS

    def h_cede(self, cpu: CPUState) -> int:
        """hw/ppc/spapr_hcall.c h_cede (reached only under TCG; KVM-HV cedes in the kernel): MSR[EE], HARD
        re-evaluated; with no work the CPU halts, exit_request is set and HARD is evaluated again, now for a
        halted CPU (f8217ae54e^). Since f8217ae54e (QEMU 10.2) the re-evaluation comes first and cpu_exit
        (which kicks too) replaces the plain exit_request store. H_PROD's `prod` is not modelled."""
        cpu.env.msr |= MSR_EE
        ppc_maybe_interrupt(cpu)
        if not cpu_has_work(cpu):
            cpu.halted = True
            cpu.exception_index = EXCP_HLT
            if kick_by_exit(cpu):
                ppc_maybe_interrupt(cpu)
                cpu_exit(cpu)
            else:
                cpu.exit_request = True
                ppc_maybe_interrupt(cpu)
        return H_SUCCESS

    # --- RTAS (spapr_rtas.c) ---------------------------------------------------------------------

    def h_rtas(self, cpu: CPUState, args: RtasArgs) -> Generator[Effect, Any, None]:
        """hw/ppc/spapr_hcall.c h_rtas -> spapr_rtas_call."""
        name = RTAS_NAMES.get(args.token, hex(args.token))
        self.machine.trace("rtas_call", cpu=cpu.cpu_index, call=name, args=list(args.args))
        cpu.count(f"rtas:{name}")
        if args.token == RTAS_QUERY_CPU_STOPPED_STATE:
            self.rtas_query_cpu_stopped_state(args)
        elif args.token == RTAS_START_CPU:
            yield from self.rtas_start_cpu(cpu, args)
        elif args.token == RTAS_STOP_SELF:
            self.rtas_stop_self(cpu)
        elif args.token == RTAS_IBM_NMI_REGISTER:
            yield from self.rtas_ibm_nmi_register(cpu, args)
        elif args.token == RTAS_CHECK_EXCEPTION:
            self.check_exception(args)
        elif args.token == RTAS_POWER_OFF:
            self.rtas_power_off(cpu, args)
        elif args.token == RTAS_SYSTEM_REBOOT:
            self.rtas_system_reboot(args)
        else:
            args.rets[0] = RTAS_OUT_PARAM_ERROR
        self.machine.trace("rtas_return", cpu=cpu.cpu_index, call=name, rets=list(args.rets))

    def rtas_ibm_nmi_register(self, cpu: CPUState, args: RtasArgs) -> Generator[Effect, Any, None]:
        """hw/ppc/spapr_rtas.c rtas_ibm_nmi_register: under KVM, kvmppc_set_fwnmi enables
        KVM_CAP_PPC_FWNMI with a vCPU ioctl - on the calling vCPU since aef92d87c5 ("pseries: fix
        kvmppc_set_fwnmi()", July 2020), on the first vCPU before it (`fwnmi_fix = false`)."""
        if self.machine.kvm is not None:
            target = cpu if self.machine.settings.fwnmi_fix else self.machine.cpus[0]
            yield from kvm_vcpu_enable_cap(cpu, target, "KVM_CAP_PPC_FWNMI")
        self.fwnmi_system_reset_addr = args.args[0]
        args.rets[0] = RTAS_OUT_SUCCESS

    def spapr_find_cpu(self, cpu_id: int) -> CPUState | None:
        cpus = self.machine.cpus
        return cpus[cpu_id] if 0 <= cpu_id < len(cpus) else None

    def rtas_query_cpu_stopped_state(self, args: RtasArgs) -> None:
        """hw/ppc/spapr_rtas.c rtas_query_cpu_stopped_state: 0 stopped, 2 not stopped."""
        if args.nargs != 1 or args.nret != 2:
            args.rets[0] = RTAS_OUT_PARAM_ERROR
            return
        target = self.spapr_find_cpu(args.args[0])
        if target is None:
            args.rets[0] = RTAS_OUT_PARAM_ERROR
            return
        stopped = target.env.quiesced if self.machine.fix_quiesced else target.halted
        args.rets[1] = 0 if stopped else 2
        args.rets[0] = RTAS_OUT_SUCCESS

    def rtas_start_cpu(self, caller: CPUState, args: RtasArgs) -> Generator[Effect, Any, None]:
        """hw/ppc/spapr_rtas.c rtas_start_cpu."""
        if args.nargs != 3 or args.nret != 1:
            args.rets[0] = RTAS_OUT_PARAM_ERROR
            return
        cpu_id, start, r3 = args.args
        target = self.spapr_find_cpu(cpu_id)
        if target is None:
            args.rets[0] = RTAS_OUT_PARAM_ERROR
            return
        if not target.halted:
            args.rets[0] = RTAS_OUT_HW_ERROR
            return
        yield from cpu_synchronize_state(target)
        env, callenv = target.env, caller.env
        env.msr = MSR_SF | MSR_ME
        lpcr = env.lpcr & ~(LPCR_ILE | LPCR_AIL)
        lpcr |= callenv.lpcr & (LPCR_ILE | LPCR_AIL)
        if env.model.mmu_v3:
            # ppc64_v3_radix(callcpu): the three radix bits all set, or all cleared (review D13).
            radix_bits = LPCR_UPRT | LPCR_GTSE | LPCR_HR
            lpcr = (lpcr | radix_bits) if callenv.lpcr & LPCR_HR else (lpcr & ~radix_bits)
            env.psscr &= ~PSSCR_EC
        self.spapr_store_lpcr(target, lpcr)
        env.tb_offset = callenv.tb_offset
        self.spapr_cpu_set_entry_state(target, start, 0, r3, 0)
        qemu_cpu_kick(target)
        args.rets[0] = RTAS_OUT_SUCCESS

    def rtas_stop_self(self, cpu: CPUState) -> None:
        """hw/ppc/spapr_rtas.c rtas_stop_self (on the calling CPU)."""
        assert current_cpu.get() is cpu
        env = cpu.env
        env.psscr |= PSSCR_EC
        if self.machine.fix_quiesced:
            env.quiesced = True
            ppc_maybe_interrupt(cpu)
        cpu.halted = True
        self.spapr_store_lpcr(cpu, env.lpcr & ~env.model.lpcr_pm)
        self.kvmppc_set_reg_ppc_online(cpu, 0)
        exit_or_kick(cpu)  # f8217ae54e (QEMU 10.2): cpu_exit


    def rtas_power_off(self, cpu: CPUState, args: RtasArgs) -> None:
        """hw/ppc/spapr_rtas.c rtas_power_off: a guest shutdown request for the main loop, and the calling
        CPU stopped (cpus.py cpu_stop_current)."""
        if args.nargs != 2 or args.nret != 1:
            args.rets[0] = RTAS_OUT_PARAM_ERROR
            return
        qemu_system_shutdown_request(self.machine, "guest-shutdown")
        cpu_stop_current(self.machine)
        args.rets[0] = RTAS_OUT_SUCCESS

    def rtas_system_reboot(self, args: RtasArgs) -> None:
        """hw/ppc/spapr_rtas.c rtas_system_reboot: a guest reset request for the main loop, which stops the
        calling CPU itself (runstate.py qemu_system_reset_request)."""
        if args.nargs != 0 or args.nret != 1:
            args.rets[0] = RTAS_OUT_PARAM_ERROR
            return
        qemu_system_reset_request(self.machine, "guest-reset")
        args.rets[0] = RTAS_OUT_SUCCESS

    # --- the RTAS event log (spapr_events.c) -----------------------------------------------------

    def spapr_powerdown_req(self) -> None:
        """hw/ppc/spapr_events.c spapr_powerdown_req, the machine's powerdown notifier (system_powerdown,
        `virsh shutdown` and `virsh reboot` in ACPI mode): an EPOW event asking for a normal system
        shutdown, queued, and the EPOW source's interrupt pulsed."""
        self.rtas_event_log_queue(SpaprEventLogEntry(RTAS_LOG_TYPE_EPOW, {
            "sensor_value": RTAS_LOG_V6_EPOW_ACTION_SYSTEM_SHUTDOWN,
            "event_modifier": RTAS_LOG_V6_EPOW_MODIFIER_NORMAL}))
        self.event_source_pulse(RTAS_LOG_TYPE_EPOW)

    def spapr_hotplug_req_add_by_index(self, drc_index: int) -> None:
        """hw/ppc/spapr_events.c spapr_hotplug_req_add_by_index -> spapr_hotplug_req_event for a CPU core:
        a hotplug event (resource CPU, action add, identified by DRC index - the model's index is the
        core's first CPU), queued, and the hotplug source's interrupt pulsed."""
        self.rtas_event_log_queue(SpaprEventLogEntry(RTAS_LOG_TYPE_HOTPLUG, {
            "resource": PSERIES_HP_ELOG_RESOURCE_CPU, "action": PSERIES_HP_ELOG_ACTION_ADD, "index": drc_index}))
        self.event_source_pulse(RTAS_LOG_TYPE_HOTPLUG)

    def rtas_event_log_queue(self, entry: SpaprEventLogEntry) -> None:
        self.pending_events.append(entry)

    def event_source_pulse(self, log_type: int) -> None:
        """qemu_irq_pulse(spapr_qirq(spapr, rtas_event_log_to_irq(spapr, log_type))): the interrupt
        controller routes the source's event to its target CPU - the event, naming its source, in that
        CPU's event queue in guest memory (XIVE's; Linux's xive_get_irq reads it) - and raises the CPU's
        external interrupt: the in-kernel controller's under KVM (it wakes a vCPU ceded in the kernel),
        else QEMU's own (ppc_set_irq; kvmppc_set_interrupt under KVM with kernel-irqchip=off)."""
        machine = self.machine
        cpu = machine.cpus[EVENT_TARGET_CPU]
        machine.guest_memory.irq_queue.setdefault(cpu.cpu_index, []).append(EVENT_SOURCE_MASKS[log_type])
        kvm = machine.kvm
        if kvm is not None and kvm.irqchip:
            kvm.vcpus[cpu.cpu_index].irq_pending = True
            cpu.kernel_irq_cond.broadcast()
        else:
            ppc_set_irq(cpu, Interrupt.EXT, True)

    def check_exception(self, args: RtasArgs) -> None:
        """hw/ppc/spapr_events.c check_exception: the oldest pending event of a class in the mask (args[2]),
        dequeued into the guest's buffer (`args.log`), or NO_ERRORS_FOUND; the interrupt of each class
        still pending is pulsed again ("our code relies on edge-triggered interrupts")."""
        if not 6 <= args.nargs <= 7 or args.nret != 1:
            args.rets[0] = RTAS_OUT_PARAM_ERROR
            return
        mask = args.args[2]
        entry = next((e for e in self.pending_events if EVENT_SOURCE_MASKS[e.log_type] & mask), None)
        if entry is None:
            args.rets[0] = RTAS_OUT_NO_ERRORS_FOUND
            return
        self.pending_events.remove(entry)
        args.log.update(entry.fields, log_type=entry.log_type)
        args.rets[0] = RTAS_OUT_SUCCESS
        for log_type in EVENT_SOURCE_MASKS:
            if any(e.log_type == log_type for e in self.pending_events):
                self.event_source_pulse(log_type)
