"""The names of the verdicts a run can end with (a small module: the CLI needs them before any model)."""

from __future__ import annotations

SUCCESS = ("booted", "completed")  # a plain boot that brought every CPU up; a scenario that did all it asks
# The guest-visible failures
STUCK_CPU = "stuck-cpu"  # "Processor N is stuck.": a started CPU never called in
LOST_INTERRUPTS = "lost-interrupts"  # a CPU never takes an interrupt again (an IPI is never acknowledged)
BAD_RTAS_ANSWER = "bad-rtas-answer"  # an RTAS call failed or answered what the guest cannot act on
RAN_WHILE_STOPPED = "ran-while-stopped"  # a thread stopped by the firmware executed instructions
WRONG_CORE_STATUS = "wrong-core-status"  # a core status register contradicts what the firmware did
# A safety invariant of the machine broke (model/invariants.py): here, a vCPU ran while the machine believed
# every vCPU paused
INVARIANT = "invariant"
FAILURE_KINDS = (STUCK_CPU, LOST_INTERRUPTS, BAD_RTAS_ANSWER, RAN_WHILE_STOPPED, WRONG_CORE_STATUS, INVARIANT)
# A thread makes no progress though nothing waits for it: a halted vCPU's thread goes round its loop without
# ever sleeping, dropping and retaking the BQL (the progress watchdog; a hold that never ends is a lockup)
SPINNING = "spinning"
VERDICTS = (*SUCCESS, "lockup", SPINNING, *FAILURE_KINDS, "deadline")
