"""The vSphere input: pyVmomi reader, inventory listing and disk download.

Pipeline position: like the VMX and OVF readers, it produces the neutral
``vmshift.model.VirtualMachine``; the libvirt writer takes it from there.

    connection.py  URL/TLS/password handling and login
    reader.py      VM config -> model (devices.py maps each device class)
    inventory.py   `list` in bulk through the PropertyCollector
    download.py    power policy, snapshot, which files make up each disk
    datastore.py   resumable HTTPS /folder transfers
"""
