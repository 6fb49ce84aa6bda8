"""vcpu_sched: a model of QEMU's ppc64 vCPU scheduling that reproduces the "RTAS stopped state" hang."""

__version__ = "0.1.0"
