"""`vmshift convert vm`: a VMware VM in, a KVM VM that boots with its network out.

One module per stage, the neutral model flowing through:

    source.py    read the source (VMX, OVA/OVF, bare disks) into the model
    vsphere.py   a vCenter/ESXi VM: read and checked first, its disks downloaded later
    overlay.py   copy-on-write overlays over the read-only source disks
    guest.py     one appliance launch: inspect, rules, guest changes (vmshift/drivers)
    copy.py      the disk engine copies the overlays out (verified, concurrently)
    output.py    the model pointed at the converted disks; NAME.xml, or the domain defined
    bootcheck.py start, and read what the guest says of itself on its console
    pipeline.py  the stages in order, timed, undone on failure
"""
