"""PowerPC CPU state: registers, bit constants and the CPU models.

Mirrors target/ppc/cpu.h (CPUPPCState, LPCR/PSSCR/MSR bits, PPC_INTERRUPT_*) and
target/ppc/cpu_init.c (the POWER8/9/10 classes: lpcr_pm, lpcr_mask, excp_model).

Only the registers the RTAS-stopped hang depends on are kept. Values are QEMU's (see cpu.h); the
LPCR bits that share a position between generations (P8 PECE0..4 are P9's PDEE..OEE) are given both names.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Any, NamedTuple


def PPC_BIT(n: int) -> int:
    """Big-endian bit number n of a 64-bit register (target/ppc/cpu.h PPC_BIT)."""
    return 1 << (63 - n)


# MSR (target/ppc/cpu.h)
MSR_SF = 1 << 63
MSR_HV = 1 << 60
MSR_EE = 0x8000
MSR_PR = 0x4000
MSR_FP = 0x2000
MSR_ME = 0x1000
HRESET_VECTOR = 0x100  # target/ppc/cpu_init.c init_excp_POWER7 (POWER7 to POWER10), excp_prefix 0

# LPCR (target/ppc/cpu.h)
LPCR_HVEE = 0x0000400000000000
LPCR_VPM0 = PPC_BIT(0)
LPCR_VPM1 = PPC_BIT(1)
LPCR_ISL = PPC_BIT(2)
LPCR_KBV = PPC_BIT(3)
LPCR_DPFD = 0x7 << 52
LPCR_RMLS = 0xF << 26  # bits 34:37 (POWER8)
LPCR_VRMASD = 0x1F << 20  # bits 39:43 (POWER8)
LPCR_HAIL = 0x04000000
LPCR_ILE = 0x02000000
LPCR_AIL = 0x01800000
LPCR_AIL_SHIFT = 23
LPCR_UPRT = 0x00400000
LPCR_EVIRT = 0x00200000
LPCR_HR = 0x00100000
LPCR_ONL = 0x00040000
LPCR_LD = 0x00020000
LPCR_PDEE = 0x00010000
LPCR_HDEE = 0x00008000
LPCR_EEE = 0x00004000
LPCR_DEE = 0x00002000
LPCR_OEE = 0x00001000
LPCR_MER = 0x800
LPCR_GTSE = 0x400
LPCR_TC = 0x200
LPCR_HEIC = 0x10
LPCR_LPES0 = 0x8
LPCR_LPES1 = 0x4
LPCR_HVICE = 0x2
LPCR_HDICE = 0x1

LPCR_P8_PECE0 = LPCR_PDEE
LPCR_P8_PECE1 = LPCR_HDEE
LPCR_P8_PECE2 = LPCR_EEE
LPCR_P8_PECE3 = LPCR_DEE
LPCR_P8_PECE4 = LPCR_OEE

# PSSCR (target/ppc/cpu.h)
PSSCR_ESL = 0x200000
PSSCR_EC = 0x100000

# Names in the order QEMU's cpu.h lists them, for decoding a value (high bit first).
LPCR_BIT_NAMES: tuple[tuple[int, str], ...] = (
    (LPCR_VPM0, "VPM0"), (LPCR_VPM1, "VPM1"), (LPCR_ISL, "ISL"), (LPCR_KBV, "KBV"),
    (LPCR_HVEE, "HVEE"), (LPCR_HAIL, "HAIL"), (LPCR_ILE, "ILE"), (LPCR_UPRT, "UPRT"),
    (LPCR_EVIRT, "EVIRT"), (LPCR_HR, "HR"), (LPCR_ONL, "ONL"), (LPCR_LD, "LD"),
    (LPCR_PDEE, "PDEE"), (LPCR_HDEE, "HDEE"), (LPCR_EEE, "EEE"), (LPCR_DEE, "DEE"),
    (LPCR_OEE, "OEE"), (LPCR_MER, "MER"), (LPCR_GTSE, "GTSE"), (LPCR_TC, "TC"),
    (LPCR_HEIC, "HEIC"), (LPCR_LPES0, "LPES0"), (LPCR_LPES1, "LPES1"), (LPCR_HVICE, "HVICE"),
    (LPCR_HDICE, "HDICE"),
)
# POWER8 calls the exit-enable bits PECE0..PECE4.
P8_PECE_NAMES = {LPCR_P8_PECE0: "PECE0", LPCR_P8_PECE1: "PECE1", LPCR_P8_PECE2: "PECE2", LPCR_P8_PECE3: "PECE3",
                 LPCR_P8_PECE4: "PECE4"}


class Interrupt(Enum):
    """PPC_INTERRUPT_* bits of env->pending_interrupts (target/ppc/cpu.h)."""

    RESET = 0x1
    MCK = 0x4
    EXT = 0x8
    DECR = 0x100
    HDECR = 0x200
    DOORBELL = 0x4000
    PERFM = 0x8000
    HMI = 0x10000
    HDOORBELL = 0x20000
    HVIRT = 0x40000
    EBB = 0x80000


class ExcpModel(Enum):
    """env->excp_model: which interrupt-selection function applies (target/ppc/cpu.h)."""

    POWER8 = "POWER8"
    POWER9 = "POWER9"
    POWER10 = "POWER10"


# PPC_LPCR_MASK_POWER9 (target/ppc/cpu_init.h): note LPES1 is not in it.
_LPCR_MASK_POWER9 = (
    LPCR_VPM1 | LPCR_ISL | LPCR_KBV | LPCR_DPFD | LPCR_HVEE | 0x1F000 | LPCR_ILE | LPCR_AIL
    | LPCR_UPRT | LPCR_EVIRT | LPCR_HR | LPCR_ONL | LPCR_LD | LPCR_MER | LPCR_GTSE | LPCR_TC
    | LPCR_HEIC | LPCR_LPES0 | LPCR_HVICE | LPCR_HDICE
)


class CpuModel(NamedTuple):
    """A PowerPCCPUClass: the parts of cpu_init.c's class init the model needs."""

    name: str
    excp_model: ExcpModel
    lpcr_pm: int
    lpcr_mask: int
    has_psscr: bool
    mmu_v3: bool


# The logical PVR of each architecture level (target/ppc/cpu-models.h CPU_POWERPC_LOGICAL_2_07, _3_00,
# _3_10): the compatibility mode a guest can ask for at CAS.
LOGICAL_PVR = {"POWER8": 0x0F000004, "POWER9": 0x0F000005, "POWER10": 0x0F000006}

CPU_MODELS: dict[str, CpuModel] = {
    # POWER8 (cpu_init.c ~6405, review D11): PECE0..4, no PSSCR, hash MMU only.
    "POWER8": CpuModel("POWER8", ExcpModel.POWER8, 0x1F000,
                       LPCR_VPM0 | LPCR_VPM1 | LPCR_ISL | LPCR_KBV | LPCR_DPFD | LPCR_VRMASD | LPCR_RMLS | LPCR_ILE
                       | LPCR_AIL | LPCR_ONL | 0x1F000 | LPCR_MER | LPCR_TC | LPCR_LPES0 | LPCR_HDICE,
                       has_psscr=False, mmu_v3=False),
    "POWER9": CpuModel("POWER9", ExcpModel.POWER9, 0x1F000, _LPCR_MASK_POWER9, has_psscr=True, mmu_v3=True),
    # POWER10 adds HAIL to the POWER9 mask.
    "POWER10": CpuModel("POWER10", ExcpModel.POWER10, 0x1F000, _LPCR_MASK_POWER9 | LPCR_HAIL,
                        has_psscr=True, mmu_v3=True),
}


@dataclass(eq=False, repr=False)
class CPUPPCState:
    """CPUPPCState (target/ppc/cpu.h): the architected state QEMU keeps for one vCPU.

    Under KVM this is QEMU's *copy*; the kernel has its own (`FakeKvm`), and the two are reconciled
    only by `kvm_arch_get_registers` / `kvm_arch_put_registers`.
    """

    model: CpuModel
    msr: int = 0
    lpcr: int = LPCR_LPES0 | LPCR_LPES1  # register_power5p_lpar_sprs default
    psscr: int = 0
    nip: int = 0
    gpr3: int = 0
    pending_interrupts: int = 0
    quiesced: bool = False
    resume_as_sreset: bool = False
    has_hv_mode: bool = True  # stays true on spapr although vhyp clears MSR_HVB (cpu_init.c)
    decr: int = 0
    tb_offset: int = 0
    compat_pvr: int = 0  # the logical PVR negotiated at CAS (0: none, the raw PVR), target/ppc/compat.c
    # Not a QEMU field: the guest's program counter is not modelled, so an entry-state write (reset,
    # start-cpu) is what tells the guest executor to start the program at `nip` afresh.
    entry_gen: int = 0

    def pending(self, irq: Interrupt) -> bool:
        # _value_ is the member's own attribute; `.value` goes through Enum's descriptor, which the
        # interrupt-selection functions would pay on every test of every re-evaluation.
        return bool(self.pending_interrupts & irq._value_)

    def loop_state(self) -> tuple[Any, ...]:
        """What one turn of the vCPU loop reads of this env (CPUState.loop_snapshot)."""
        return (self.quiesced, self.pending_interrupts, self.lpcr, self.psscr, self.msr)


def decode_lpcr(value: int, model: CpuModel | None = None) -> str:
    """LPCR as 'NAME|NAME|...' (POWER8 exit-enable bits under their PECE names)."""
    p8 = model is not None and model.excp_model is ExcpModel.POWER8
    names = []
    for bit, name in LPCR_BIT_NAMES:
        if value & bit:
            names.append(P8_PECE_NAMES.get(bit, name) if p8 else name)
    ail = (value & LPCR_AIL) >> LPCR_AIL_SHIFT
    if ail:
        names.append(f"AIL={ail}")
    dpfd = (value & LPCR_DPFD) >> 52
    if dpfd:
        names.append(f"DPFD={dpfd}")
    return "|".join(names) if names else "0"


def pending_names(pending: int) -> list[str]:
    return [irq.name for irq in Interrupt if pending & irq.value]
