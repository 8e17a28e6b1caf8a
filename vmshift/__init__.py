"""vmshift: move virtual machines onto KVM and between KVM hosts."""

__version__ = "0.1.0"

# Every --json document carries this; bump it when a document's shape changes.
SCHEMA_VERSION = 1
