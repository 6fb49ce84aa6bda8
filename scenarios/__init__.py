"""The scenario files that ship with vcpu_sched (installed as the package `vcpu_sched.scenarios`)."""
