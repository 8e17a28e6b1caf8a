"""vmshift evacuate: empty a libvirt host before maintenance.

``placement`` decides which target takes each VM (a pure function of the
facts the caller gathered); ``maintenance`` records the hosts in maintenance.
"""
