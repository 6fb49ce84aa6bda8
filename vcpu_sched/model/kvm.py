"""The KVM vCPU thread and the fake kernel behind it.

QEMU side, mirrored from accel/kvm/kvm-accel-ops.c (`kvm_vcpu_thread_fn`), accel/kvm/kvm-all.c
(`kvm_cpu_exec`, `kvm_cpu_synchronize_state`, `do_kvm_cpu_synchronize_post_reset`) and
target/ppc/kvm.c (`kvm_arch_process_async_events`, `kvm_arch_handle_exit`, `kvm_arch_get_registers`,
`kvm_arch_put_registers`).

Theory of operation: the thread holds the BQL everywhere except inside kvm_cpu_exec's KVM_RUN loop
(dropped once before it, taken once after) and while asleep in qemu_wait_io_event (since QEMU 10.2
qemu_process_cpu_events) or run_on_cpu. The
EXCP_HLT short-cut for a halted CPU comes *before* the BQL is dropped, so a halted CPU whose thread
never sleeps (HARD set: `cpu_has_work`) never lets go of the BQL.

Kernel side (`FakeKvm`), after Linux 6.12 arch/powerpc/kvm/book3s_hv.c: the vcore's LPCR is set up
from the host's (`kvmppc_core_init_vm_hv`) and userspace may change only DPFD, ILE, TC, AIL and LD of it
(`kvmppc_set_lpcr`); PSSCR is stored masked with PSSCR_GUEST_VIS, which drops EC. A register get
overwrites QEMU's copy. KVM_RUN runs the guest until an exit or a kick; H_CEDE, H_REGISTER_VPA and
the interrupt controller's H_IPI / H_EOI (in-kernel XICS) are handled in the kernel and do not exit.
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

from .accel import execute_guest, runner_at
from .cpus import (
    EXCP_DEBUG,
    EXCP_HLT,
    EXCP_INTERRUPT,
    CPUState,
    cpu_can_run,
    cpu_events,
    cpu_thread_signal_created,
    current_cpu,
    run_on_cpu,
)
from .effects import Block, BqlLock, BqlUnlock, Effect, Spend
from .exclusive import cpu_exec_end, cpu_exec_start
from .guest import GuestRunner, Hcall, StoreDecr
from .ppc import (
    LPCR_AIL,
    LPCR_DPFD,
    LPCR_GTSE,
    LPCR_HDICE,
    LPCR_HEIC,
    LPCR_HR,
    LPCR_HVICE,
    LPCR_ILE,
    LPCR_LD,
    LPCR_ONL,
    LPCR_TC,
    LPCR_UPRT,
    LPCR_VPM0,
    LPCR_VPM1,
    PSSCR_EC,
    CpuModel,
    ExcpModel,
    decode_lpcr,
)
from .rcu import rcu_register_thread
from .spapr_abi import (
    H_CEDE,
    H_EOI,
    H_IPI,
    H_REGISTER_VPA,
    H_SET_MODE,
    H_SET_MODE_RESOURCE_ADDR_TRANS_MODE,
    H_UNSUPPORTED_FLAG,
    HCALL_NAMES,
)

if TYPE_CHECKING:
    from .spapr import Spapr

EINTR = 4
KVM_PUT_RUNTIME_STATE, KVM_PUT_RESET_STATE, KVM_PUT_FULL_STATE = 1, 2, 3
PSSCR_GUEST_VIS = 0xF0000000000003FF  # arch/powerpc/include/asm/reg.h: EC (0x100000) is not in it
LPCR_PECE = 0x0001F000  # Linux's name for the five exit-enable bits
LPCR_LPES = 0x0000000C
_USER_LPCR_MASK = LPCR_DPFD | LPCR_ILE | LPCR_TC | LPCR_AIL | LPCR_LD
_LOW32 = 0xFFFFFFFF


@dataclass(eq=False, repr=False)
class Vcore:
    """struct kvmppc_vcore: the LPCR is per virtual core, shared by its threads."""

    lpcr: int


@dataclass(eq=False, repr=False)
class KvmVcpu:
    """The kernel's view of one vCPU (struct kvm_vcpu + struct kvm_run)."""

    vcore: Vcore
    psscr: int = 0
    msr: int = 0
    nip: int = 0
    online: int = 0
    runner: GuestRunner | None = None
    entry_gen: int = 0
    hcall_ret: int = 0
    exit_hcall: Hcall | None = None
    ceded: bool = False
    irq_pending: bool = False  # an in-kernel XICS/XIVE interrupt (an IPI) for this vCPU
    in_run: bool = False  # inside ioctl(KVM_RUN): the kernel holds this vCPU's mutex (vcpu->mutex)


class KvmExit(NamedTuple):
    """struct kvm_run after KVM_RUN returned 0: why the guest stopped (`op`: the guest operation that
    exited, e.g. an s390x SIGP instruction)."""

    reason: str
    hcall: Hcall | None = None
    op: Any = None
    detail: str = ""


def kvmppc_core_init_vm_hv(host_lpcr: int, model: CpuModel, radix: bool) -> int:
    """book3s_hv.c kvmppc_core_init_vm_hv, LPCR part (bare-metal host)."""
    lpcr = host_lpcr & (LPCR_PECE | LPCR_LPES)
    lpcr |= (4 << 52) | LPCR_HDICE | LPCR_VPM0 | LPCR_VPM1 | LPCR_ONL
    if model.excp_model is not ExcpModel.POWER8:
        lpcr &= ~LPCR_VPM0
        lpcr |= LPCR_HVICE | LPCR_HEIC
        if radix:
            lpcr &= ~LPCR_VPM1
            lpcr |= LPCR_UPRT | LPCR_GTSE | LPCR_HR
    return lpcr


@dataclass(eq=False, repr=False)
class FakeKvm:
    """The kernel side: one KvmVcpu per vCPU, vcores of `threads` vCPUs each."""

    model: CpuModel
    radix: bool
    vcpus: list[KvmVcpu] = field(default_factory=list)
    keeps_ec: bool = False  # the psscr_ec_kvm switch
    ail_filter: bool = False  # the kvm_ail_filter switch
    irqchip: bool = True  # the kernel_irqchip switch
    # What KVM_CHECK_EXTENSION answers for the irqchip capabilities: book3s has neither KVM_CAP_IRQCHIP nor
    # KVM_CAP_S390_IRQCHIP (its XICS/XIVE devices come from KVM_CREATE_DEVICE).
    caps: frozenset[str] = frozenset()

    @classmethod
    def create(cls, model: CpuModel, host_lpcr: int, radix: bool, smp: int, threads: int) -> FakeKvm:
        kvm = cls(model, radix and model.mmu_v3)
        vcores = [Vcore(kvmppc_core_init_vm_hv(host_lpcr, model, kvm.radix))
                  for _ in range((smp + threads - 1) // threads)]
        kvm.vcpus = [KvmVcpu(vcores[i // threads]) for i in range(smp)]
        return kvm

    def kvmppc_set_lpcr(self, vcpu: KvmVcpu, new_lpcr: int, preserve_top32: bool) -> None:
        """book3s_hv.c kvmppc_set_lpcr + kvmppc_filter_lpcr_hv: only DPFD, ILE, TC, AIL, LD change."""
        vcpu.vcore.lpcr = self._filtered_lpcr(vcpu, new_lpcr, preserve_top32)

    def _filtered_lpcr(self, vcpu: KvmVcpu, new_lpcr: int, preserve_top32: bool) -> int:
        mask = _USER_LPCR_MASK & (_LOW32 if preserve_top32 else ~0)
        lpcr = (vcpu.vcore.lpcr & ~mask) | (new_lpcr & mask)
        if self.radix:
            lpcr &= ~LPCR_TC
        if (lpcr & LPCR_AIL) != LPCR_AIL:
            lpcr &= ~LPCR_AIL  # only AIL=3 is allowed
        if self.model.excp_model is ExcpModel.POWER8:
            lpcr &= ~LPCR_LD
        return lpcr

    def accepted_lpcr(self, vcpu: KvmVcpu, new_lpcr: int) -> int:
        """What QEMU would hold after putting `new_lpcr` and getting it back (kvm_arch_put_registers,
        then kvm_arch_get_registers with the 32-bit one_reg id), without doing either."""
        return self._filtered_lpcr(vcpu, new_lpcr, preserve_top32=True) & _LOW32

    def guest_state(self, index: int) -> dict[str, Any]:
        """What a migration carries for this vCPU besides QEMU's registers: where the guest program is
        (its memory and PC, which the model keeps in the runner) and its pending in-kernel interrupt."""
        vcpu = self.vcpus[index]
        return {name: getattr(vcpu, name)
                for name in ("runner", "entry_gen", "hcall_ret", "exit_hcall", "ceded", "irq_pending")}

    def load_guest_state(self, index: int, state: dict[str, Any]) -> None:
        for name, value in state.items():
            setattr(self.vcpus[index], name, value)

    def set_one_reg_psscr(self, vcpu: KvmVcpu, value: int) -> None:
        """book3s_hv.c kvmppc_set_one_reg_hv (KVM_REG_PPC_PSSCR): masked with PSSCR_GUEST_VIS, which has
        no EC. `keeps_ec` is the what-if switch `psscr_ec_kvm = "kept"` (review section 5: which wake
        path fired on the reporter's host cannot be told from the code)."""
        vcpu.psscr = value & (PSSCR_GUEST_VIS | (PSSCR_EC if self.keeps_ec else 0))


def kvmppc_set_interrupt(cpu: CPUState, level: bool) -> None:
    """target/ppc/kvm.c kvmppc_set_interrupt: QEMU's external interrupt line into the kernel
    (KVM_INTERRUPT set/unset), used when the interrupt controller is QEMU's (kernel-irqchip=off); the
    kernel then wakes the vCPU if it is ceded (kvm_vcpu_kick)."""
    kvm = cpu.machine.kvm
    assert kvm is not None
    kvm.vcpus[cpu.cpu_index].irq_pending = level
    if level:
        cpu.kernel_irq_cond.broadcast()


def kvm_arch_get_registers(cpu: CPUState) -> None:
    """target/ppc/kvm.c kvm_arch_get_registers: the kernel's values *assigned* into env (no masking,
    no ppc_store_lpcr, no ppc_maybe_interrupt). LPCR uses the 32-bit one_reg id: upper half reads 0."""
    kvm = cpu.machine.kvm
    assert kvm is not None
    vcpu = kvm.vcpus[cpu.cpu_index]
    env = cpu.env
    before_lpcr, before_psscr = env.lpcr, env.psscr
    env.lpcr = vcpu.vcore.lpcr & _LOW32
    if env.model.has_psscr:
        env.psscr = vcpu.psscr
    env.msr = vcpu.msr
    env.nip = vcpu.nip
    cpu.machine.trace("kvm_get_registers", cpu=cpu.cpu_index, via=cpu.current_work or "-",
                      lpcr_before=hex(before_lpcr), lpcr=hex(env.lpcr),
                      # the explanation reads none of it: decoded only for a log
                      lpcr_decoded=decode_lpcr(env.lpcr, env.model) if cpu.machine.logging else "",
                      psscr_ec_before=bool(before_psscr & PSSCR_EC), psscr_ec=bool(env.psscr & PSSCR_EC))


def kvm_arch_put_registers(cpu: CPUState, level: int) -> None:
    """target/ppc/kvm.c kvm_arch_put_registers: every registered SPR at every level."""
    kvm = cpu.machine.kvm
    assert kvm is not None
    vcpu = kvm.vcpus[cpu.cpu_index]
    env = cpu.env
    lpcr_before = vcpu.vcore.lpcr
    kvm.kvmppc_set_lpcr(vcpu, env.lpcr, preserve_top32=True)
    if env.model.has_psscr:
        kvm.set_one_reg_psscr(vcpu, env.psscr)
    vcpu.msr = env.msr
    vcpu.nip = env.nip
    if env.entry_gen != vcpu.entry_gen:
        vcpu.entry_gen = env.entry_gen
        vcpu.runner = runner_at(cpu, env.nip, env.entry_gen)
        vcpu.ceded = False
        vcpu.exit_hcall = None
    cpu.machine.trace("kvm_put_registers", cpu=cpu.cpu_index, level=level, lpcr_wanted=hex(env.lpcr),
                      lpcr_before=hex(lpcr_before), lpcr=hex(vcpu.vcore.lpcr),
                      ignored=hex((env.lpcr ^ vcpu.vcore.lpcr) & _LOW32),
                      psscr_ec_wanted=bool(env.psscr & PSSCR_EC), psscr_ec=bool(vcpu.psscr & PSSCR_EC))


def do_kvm_cpu_synchronize_state(cpu: CPUState) -> None:
    """accel/kvm/kvm-all.c do_kvm_cpu_synchronize_state."""
    if not cpu.vcpu_dirty:
        kvm_arch_get_registers(cpu)
        cpu.vcpu_dirty = True


def kvm_cpu_synchronize_state(cpu: CPUState) -> Generator[Effect, Any, None]:
    """accel/kvm/kvm-all.c kvm_cpu_synchronize_state: a get on the vCPU's own thread, unless dirty."""
    if not cpu.vcpu_dirty:
        yield from run_on_cpu(cpu, do_kvm_cpu_synchronize_state, "do_kvm_cpu_synchronize_state")


def cpu_synchronize_state(cpu: CPUState) -> Generator[Effect, Any, None]:
    """system/cpus.c cpu_synchronize_state: the accelerator's register get (KVM; TCG has nothing to do)."""
    if cpu.machine.kvm is not None:
        yield from kvm_cpu_synchronize_state(cpu)


def do_kvm_cpu_synchronize_post_reset(cpu: CPUState) -> None:
    """accel/kvm/kvm-all.c do_kvm_cpu_synchronize_post_reset."""
    kvm_arch_put_registers(cpu, KVM_PUT_RESET_STATE)
    cpu.vcpu_dirty = False


def do_kvm_cpu_synchronize_pre_loadvm(cpu: CPUState) -> None:
    """accel/kvm/kvm-all.c do_kvm_cpu_synchronize_pre_loadvm: the state about to be loaded is QEMU's, so
    the vCPU is marked dirty - no register get happens until it is put back."""
    cpu.vcpu_dirty = True


def do_kvm_cpu_synchronize_post_init(cpu: CPUState) -> None:
    """accel/kvm/kvm-all.c do_kvm_cpu_synchronize_post_init."""
    kvm_arch_put_registers(cpu, KVM_PUT_FULL_STATE)
    cpu.vcpu_dirty = False


def kvm_arch_process_async_events(cpu: CPUState) -> bool:
    """target/ppc/kvm.c kvm_arch_process_async_events: just `halted`."""
    return cpu.halted


def kvm_vcpu_ioctl_run(cpu: CPUState) -> Generator[Effect, Any, tuple[int, KvmExit | None]]:
    """ioctl(KVM_RUN), the kernel side: (-EINTR, None) on a kick, (0, exit) otherwise."""
    kvm = cpu.machine.kvm
    assert kvm is not None
    return (yield from with_vcpu_mutex(cpu, kvm.vcpus[cpu.cpu_index], _kvm_run(cpu)))


class HasVcpuMutex(Protocol):
    in_run: bool


def with_vcpu_mutex(cpu: CPUState, vcpu: HasVcpuMutex,
                    run: Generator[Effect, Any, tuple[int, KvmExit | None]]
                    ) -> Generator[Effect, Any, tuple[int, KvmExit | None]]:
    """virt/kvm/kvm_main.c kvm_vcpu_ioctl for KVM_RUN, every target's: the vCPU's mutex is held (`in_run`) for
    as long as the vCPU is in the guest - halted or ceded in the kernel included - and its release wakes a
    thread waiting for it in kvm_vcpu_ioctl."""
    vcpu.in_run = True
    outcome = yield from run
    vcpu.in_run = False
    cpu.kvm_mutex_cond.broadcast()
    return outcome


def kvm_vcpu_ioctl(target: CPUState, ioctl: str) -> Generator[Effect, Any, None]:
    """accel/kvm/kvm-all.c kvm_vcpu_ioctl from a thread other than the target's own: the kernel first takes
    the target vCPU's mutex (virt/kvm/kvm_main.c kvm_vcpu_ioctl), so the calling thread waits - with
    whatever it holds, the BQL included - for as long as the target is inside KVM_RUN. Nothing makes the
    target leave: QEMU does not kick it."""
    machine = target.machine
    kvm = machine.kvm
    assert kvm is not None
    vcpu = kvm.vcpus[target.cpu_index]
    if vcpu.in_run:
        caller = current_cpu.get()
        machine.trace("kvm_vcpu_mutex_wait", cpu=caller.cpu_index if caller else machine.thread_name(),
                      target=target.cpu_index, ioctl=ioctl)
        while vcpu.in_run:
            yield Block((target.kvm_mutex_cond,), None, site=f"kvm_vcpu_ioctl({ioctl})",
                        what=f"CPU {target.cpu_index}'s vCPU mutex")


def kvm_vcpu_enable_cap(caller: CPUState, target: CPUState, cap: str) -> Generator[Effect, Any, None]:
    """accel/kvm/kvm-all.c kvm_vcpu_enable_cap -> kvm_vcpu_ioctl(KVM_ENABLE_CAP)."""
    yield from kvm_vcpu_ioctl(target, f"KVM_ENABLE_CAP({cap})")
    caller.machine.trace("kvm_vcpu_enable_cap", cpu=caller.cpu_index, target=target.cpu_index, cap=cap)


def _kvm_run(cpu: CPUState) -> Generator[Effect, Any, tuple[int, KvmExit | None]]:
    kvm = cpu.machine.kvm
    assert kvm is not None
    vcpu = kvm.vcpus[cpu.cpu_index]
    runner = vcpu.runner
    if vcpu.exit_hcall is not None and runner is not None:
        vcpu.exit_hcall = None
        runner.advance(vcpu.hcall_ret)
    while True:
        op = yield from execute_guest(cpu, runner, lambda: cpu.immediate_exit)
        if op is None:
            return -EINTR, None
        assert runner is not None
        if isinstance(op, StoreDecr):
            # The kernel owns the DEC (no DEC timer is modelled); QEMU's pending bit is not touched.
            runner.advance()
            continue
        assert isinstance(op, Hcall)
        if op.nr == H_CEDE:
            # kvmppc_h_cede in the kernel: idle until an interrupt for this vCPU (the in-kernel
            # interrupt controller's IPIs; no DEC is modelled). A kick makes KVM_RUN return -EINTR
            # and the vCPU cedes again on the next KVM_RUN.
            if vcpu.irq_pending:
                vcpu.irq_pending = vcpu.ceded = False
                runner.advance(0)
                continue
            if not vcpu.ceded:
                vcpu.ceded = True
                cpu.machine.trace("kvm_h_cede", cpu=cpu.cpu_index)
            yield Block((cpu.kick_cond, cpu.kernel_irq_cond), None)
            continue
        if op.nr == H_IPI and kvm.irqchip:
            target = cpu.machine.cpus[op.args[0]] if 0 <= op.args[0] < len(kvm.vcpus) else None
            if target is not None:
                kvm.vcpus[target.cpu_index].irq_pending = True
                target.kernel_irq_cond.broadcast()
            runner.advance(0)
            continue
        if op.nr == H_REGISTER_VPA or (op.nr == H_EOI and kvm.irqchip):
            runner.advance(0)
            continue
        if (kvm.ail_filter and kvm.radix and op.nr == H_SET_MODE and op.args[1] == H_SET_MODE_RESOURCE_ADDR_TRANS_MODE
                and op.args[0] == 3):
            # kvmppc_h_set_mode on a CPU_FTR_P9_RADIX_PREFETCH_BUG host refuses AIL=3 in the kernel (L12
            # book3s_hv.c): the guest gets the error and QEMU never sees the hcall.
            runner.advance(H_UNSUPPORTED_FLAG)
            continue
        vcpu.exit_hcall = op
        return 0, KvmExit("PAPR_HCALL", op)


def kvm_arch_handle_exit(cpu: CPUState, run: KvmExit) -> Generator[Effect, Any, int]:
    """target/ppc/kvm.c kvm_arch_handle_exit: takes the BQL for every exit it handles."""
    spapr: Spapr = cpu.machine.spapr
    kvm = cpu.machine.kvm
    assert kvm is not None and run.hcall is not None
    yield BqlLock("kvm_arch_handle_exit")
    ret = yield from spapr.spapr_hypercall(cpu, run.hcall)
    kvm.vcpus[cpu.cpu_index].hcall_ret = ret
    yield BqlUnlock("kvm_arch_handle_exit")
    return 0


def kvm_irqchip_create(caps: frozenset[str], irqchip_fix: bool) -> bool:
    """accel/kvm/kvm-all.c kvm_irqchip_create (kvm_init, with kernel-irqchip allowed, the default): whether it
    sets kvm_halt_in_kernel_allowed. With neither KVM_CAP_IRQCHIP nor KVM_CAP_S390_IRQCHIP it returns early.
    98884e0cc1 (February 2026) moved the checks into do_kvm_irqchip_create, whose early return no longer
    ended its caller, so every host got an "irqchip" and halt-in-kernel; afa63fc0e3 (April 2026, before
    11.0) makes it return -EOPNOTSUPP again (`irqchip_fix`)."""
    if not caps & {"KVM_CAP_IRQCHIP", "KVM_CAP_S390_IRQCHIP"} and irqchip_fix:
        return False
    return True


def kvm_cpu_exec(cpu: CPUState) -> Generator[Effect, Any, int]:
    """accel/kvm/kvm-all.c kvm_cpu_exec (called and returning with the BQL held). With `hlt_bql_patch` (a
    what-if: the patch posted in April 2026 as "accel/kvm: Fix BQL lock imbalance in kvm_cpu_exec", not
    merged) the EXCP_HLT return drops the BQL first and kvm_vcpu_thread_fn takes it back."""
    machine = cpu.machine
    old_loop = not machine.new_loop  # 9a191d3782 moved the clears below to cpu_events
    arch = machine.arch
    if arch.kvm_arch_process_async_events(cpu):
        if old_loop:
            cpu.exit_request = False
        dropped = machine.settings.hlt_bql_patch
        cpu.count("excp_hlt")
        machine.trace("kvm_cpu_exec", cpu=cpu.cpu_index, ret="EXCP_HLT", bql_dropped=dropped)
        if dropped:
            yield BqlUnlock("kvm_cpu_exec")
        return EXCP_HLT
    machine.trace("kvm_cpu_exec", cpu=cpu.cpu_index)
    yield BqlUnlock("kvm_cpu_exec")
    if machine.cpu_list.pending_cpus:  # cpu_exec_start's own test, before a generator is made
        yield from cpu_exec_start(cpu)
    else:
        cpu.running = True
    while True:
        if cpu.vcpu_dirty:
            arch.kvm_arch_put_registers(cpu, KVM_PUT_RUNTIME_STATE)
            cpu.vcpu_dirty = False
        if cpu.exit_request:
            cpu.immediate_exit = True
        machine.trace("kvm_vcpu_ioctl_run", cpu=cpu.cpu_index)
        run_ret, run = yield from arch.kvm_vcpu_ioctl_run(cpu)
        if run_ret < 0:
            cpu.immediate_exit = False  # kvm_eat_signals
            machine.trace("kvm_run_exit", cpu=cpu.cpu_index, reason="EINTR")
            cpu.count("exit:EINTR")
            ret = EXCP_INTERRUPT
            break
        assert run is not None
        hc = run.hcall
        name = HCALL_NAMES.get(hc.nr, hex(hc.nr)) if hc else run.detail or run.reason
        machine.trace("kvm_run_exit", cpu=cpu.cpu_index, reason=run.reason, hcall=name)
        cpu.count(f"exit:{run.reason}")
        ret = yield from arch.kvm_arch_handle_exit(cpu, run)
        if ret != 0:
            break
    cpu_exec_end(cpu)
    yield BqlLock("kvm_cpu_exec")
    if old_loop:
        cpu.exit_request = False
    return ret


def kvm_vcpu_thread_fn(cpu: CPUState) -> Generator[Effect, Any, None]:
    """accel/kvm/kvm-accel-ops.c kvm_vcpu_thread_fn: the vCPU thread's whole life."""
    machine = cpu.machine
    current_cpu.set(cpu)
    rcu_register_thread(machine, cpu.name)
    yield BqlLock("kvm_vcpu_thread_fn")
    machine.trace("kvm_vcpu_thread_start", cpu=cpu.cpu_index, thread=cpu.name)
    cpu_thread_signal_created(cpu)
    # One turn of this loop costs host CPU time; the engine may fast-forward identical turns.
    turn = Spend(machine.settings.loop_cost_ns, spin=cpu, wake=(cpu.halt_cond, cpu.kick_cond))
    while True:
        yield turn
        cpu.count("loop_iterations")
        if cpu_can_run(cpu):
            r = yield from kvm_cpu_exec(cpu)
            if r == EXCP_DEBUG:
                pass  # cpu_handle_guest_debug: no debugger in the model
            elif r == EXCP_HLT and machine.settings.hlt_bql_patch:
                yield BqlLock("kvm_vcpu_thread_fn")  # the posted patch's second half
        yield from cpu_events(cpu)
        if cpu.unplug and not cpu_can_run(cpu):
            break
    yield BqlUnlock("kvm_vcpu_thread_fn")
