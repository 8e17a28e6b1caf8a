"""The reference VMware-style guest's build recipe (one module per stage).

``rootfs`` debootstraps Debian and makes it look exported from ESXi,
``disk`` turns a root tree into a bootable disk with libguestfs and then into
VMDKs, ``vmx`` writes the VMware configuration, ``initramfs`` lists what an
initramfs contains. The hash of these sources (less ``initramfs``, which only
reads) is part of the cache key in ``vmshift.testbed.guest``.
"""
