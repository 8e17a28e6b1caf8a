"""Looking inside guests (libguestfs) and the pre-flight rules.

Named vmshift.inspect, never a top-level inspect, which would shadow the stdlib.

The pipeline, one module per step:

- ``sources``  an argument -> a VM model (a reader such as the VMX one) or bare disks
- ``probe``    qemu-img info/check and the VMDK descriptor walk: bad input stops here
- ``session``  one read-only libguestfs appliance for all of a VM's disks
- ``storage``  partition tables, filesystems, free space, LUKS and BitLocker
- ``linux`` / ``initramfs`` / ``network``  kernels, virtio in each initramfs,
  boot loader, fstab, crypttab, network configuration
- ``windows``  the SYSTEM and SOFTWARE hives, read with hivex on the host
- ``files``    read-only file access over the appliance or a directory tree
- ``result``   the dataclasses (= the --json schema); ``report`` the human tables
- ``rules``    rules.json (metadata as data) + one predicate per rule
- ``api``      ``inspect_disks()``, which strings the steps together
"""
