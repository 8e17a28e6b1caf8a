#!/bin/sh
# Run inside the guest's tree by libguestfs `command` (chroot with /dev, /proc
# and /sys bound): put GRUB in the MBR of /dev/sda, then write grub.cfg.
#
# Under TCG on a loaded host grub-install has been seen to misjudge the disk
# now and then ("embedding is not possible, but this is required for
# cross-disk install") though the same disk installs fine on the next try. An
# explicit device map removes GRUB's guessing; udev settling and a retry cover
# the rest. The device map is removed again: Debian does not keep one.
set -u
settle() { udevadm settle --timeout=30 >/dev/null 2>&1 || sleep 2; }

settle
printf '(hd0)\t/dev/sda\n' > /boot/grub/device.map
ok=0
for attempt in 1 2 3; do
    if grub-install --target=i386-pc /dev/sda; then
        ok=1
        break
    fi
    echo "vmshift: grub-install attempt $attempt failed; /boot/grub is on:" >&2
    grub-probe --target=device /boot/grub >&2 || true
    ls -l /dev/sda* >&2 || true
    sleep 3
    settle
done
rm -f /boot/grub/device.map
[ "$ok" = 1 ] || exit 1
update-grub
