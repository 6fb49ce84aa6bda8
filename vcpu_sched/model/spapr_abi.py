"""The PAPR interface between a pseries guest and QEMU: hcall numbers, RTAS tokens, entry point.

From include/hw/ppc/spapr.h (hcalls, H_SET_MODE resources) and hw/ppc/spapr_rtas.c (tokens:
RTAS_TOKEN_BASE 0x2000 + index); the query-cpu-stopped-state answers are Linux's (QCSS_*).
"""

from __future__ import annotations

H_REGISTER_VPA = 0xDC
H_CEDE = 0xE0
H_EOI = 0x64
H_IPI = 0x6C
H_PUT_TERM_CHAR = 0x58
H_SET_MODE = 0x31C
H_REGISTER_PROC_TBL = 0x37C
H_SIGNAL_SYS_RESET = 0x380
H_WATCHDOG = 0x45C
KVMPPC_H_RTAS = 0xF000
KVMPPC_H_CAS = 0xF002
HCALL_NAMES = {H_REGISTER_VPA: "H_REGISTER_VPA", H_CEDE: "H_CEDE", H_PUT_TERM_CHAR: "H_PUT_TERM_CHAR",
               H_SET_MODE: "H_SET_MODE", KVMPPC_H_RTAS: "H_RTAS", KVMPPC_H_CAS: "H_CAS", H_EOI: "H_EOI",
               H_IPI: "H_IPI", H_REGISTER_PROC_TBL: "H_REGISTER_PROC_TBL",
               H_SIGNAL_SYS_RESET: "H_SIGNAL_SYS_RESET", H_WATCHDOG: "H_WATCHDOG"}
H_NOOP = -63
H_SUCCESS, H_FUNCTION, H_PARAMETER, H_P2, H_P3, H_P4, H_UNSUPPORTED_FLAG = 0, -2, -4, -55, -56, -57, -256

# H_SIGNAL_SYS_RESET broadcast targets (hw/ppc/spapr_hcall.c; Linux calls ALLBUTSELF H_SIGNAL_SYS_RESET_ALL_OTHERS)
H_SIGNAL_SYS_RESET_ALL, H_SIGNAL_SYS_RESET_ALLBUTSELF = -1, -2
# H_WATCHDOG flags (hw/watchdog/spapr_watchdog.c, PAPR bit numbers: operation in bits 48-55, the timeout action
# in bits 56-63; Linux drivers/watchdog/pseries-wdt.c names them the same way)
PSERIES_WDTF_OP_START, PSERIES_WDTF_OP_STOP = 0x100, 0x200
PSERIES_WDTF_ACTION_HARD_POWER_OFF, PSERIES_WDTF_ACTION_HARD_RESTART, PSERIES_WDTF_ACTION_DUMP_RESTART = 1, 2, 3
PSERIES_WDTF_LEAVE_OTHER = 1 << 16  # bit 47: leave the other watchdogs running on timeout
WDT_MAX_WATCHDOGS = 4  # include/hw/ppc/spapr.h
H_SET_MODE_RESOURCE_ADDR_TRANS_MODE = 3
H_SET_MODE_RESOURCE_LE = 4
# H_REGISTER_PROC_TBL flags (include/hw/ppc/spapr.h FLAG_*; Linux's PROC_TABLE_NEW|RADIX|GTSE for radix)
PROC_TBL_MODIFY, PROC_TBL_REGISTER, PROC_TBL_RADIX, PROC_TBL_GTSE = 0x10, 0x08, 0x04, 0x01

RTAS_POWER_OFF = 0x2003
RTAS_SYSTEM_REBOOT = 0x2004
RTAS_QUERY_CPU_STOPPED_STATE = 0x2005
RTAS_START_CPU = 0x2006
RTAS_STOP_SELF = 0x2007
RTAS_CHECK_EXCEPTION = 0x200E
RTAS_IBM_NMI_REGISTER = 0x202B  # RTAS_TOKEN_BASE + 0x2B
RTAS_NAMES = {RTAS_QUERY_CPU_STOPPED_STATE: "query-cpu-stopped-state", RTAS_START_CPU: "start-cpu",
              RTAS_STOP_SELF: "stop-self", RTAS_IBM_NMI_REGISTER: "ibm,nmi-register", RTAS_POWER_OFF: "power-off",
              RTAS_SYSTEM_REBOOT: "system-reboot",
              RTAS_CHECK_EXCEPTION: "check-exception"}
# RTAS event logs (hw/ppc/spapr_events.c): the two log types the model queues, the event classes' masks
# (EVENT_CLASS_MASK: Linux's RTAS_EPOW_WARNING and RTAS_HOTPLUG_EVENTS), the EPOW section's values for a
# normal shutdown (QEMU's RTAS_LOG_V6_EPOW_*; Linux's EPOW_SYSTEM_SHUTDOWN, EPOW_SHUTDOWN_NORMAL), and the
# vector Linux's event-source handlers pass check-exception (RTAS_VECTOR_EXTERNAL_INTERRUPT)
RTAS_LOG_TYPE_EPOW, RTAS_LOG_TYPE_HOTPLUG = 0x40, 0xE5
EVENT_CLASS_EPOW, EVENT_CLASS_HOT_PLUG = 1, 3
RTAS_EPOW_WARNING, RTAS_HOTPLUG_EVENTS = 1 << (31 - EVENT_CLASS_EPOW), 1 << (31 - EVENT_CLASS_HOT_PLUG)
RTAS_LOG_V6_EPOW_ACTION_SYSTEM_SHUTDOWN, RTAS_LOG_V6_EPOW_MODIFIER_NORMAL = 3, 1
RTAS_VECTOR_EXTERNAL_INTERRUPT = 0x500
# the hotplug section's resource and action (QEMU's RTAS_LOG_V6_HP_TYPE_CPU, RTAS_LOG_V6_HP_ACTION_ADD; Linux's
# PSERIES_HP_ELOG_RESOURCE_CPU, PSERIES_HP_ELOG_ACTION_ADD)
PSERIES_HP_ELOG_RESOURCE_CPU, PSERIES_HP_ELOG_ACTION_ADD = 1, 1
RTAS_OUT_NO_ERRORS_FOUND = 1
QCSS_STOPPED, QCSS_STOPPING, QCSS_NOT_STOPPED = 0, 1, 2

SPAPR_ENTRY_POINT = 0x100

# The logical PVRs a Linux guest lists in ibm,client-architecture-support (L12 prom_init.c:1015-1040,
# via the review of 2026-11), newest first.
LINUX_CAS_PVRS = (0x0F000007, 0x0F000006, 0x0F000005, 0x0F000004, 0x0F000003, 0x0F000002, 0x0F000001)
