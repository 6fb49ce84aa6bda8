"""target/s390x and the s390-ccw-virtio machine under KVM: the second target, and the worked example of
adding one (model/arch.py, docs/design.md "Adding a target").

cpu.py      S390CPU's state and has_work       (target/s390x/cpu.h, cpu-system.c)
sigp.py     SIGP orders QEMU handles            (target/s390x/sigp.c)
kvm.py      the s390x KVM exit path and kernel  (target/s390x/kvm/kvm.c; Linux arch/s390/kvm/sigp.c)
guest.py    the guest's programs                (Linux arch/s390/kernel/smp.c, a SIGP stress test)
machine.py  the board and its reset             (hw/s390x/s390-virtio-ccw.c)
"""
