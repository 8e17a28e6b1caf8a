#!/bin/busybox sh
# vmshift tiny guest init (busybox). Kernel command line:
#   vmshift.fill=MiB   fill that much memory with random data before "ready"
#   vmshift.dirty=MiB/s  then dirty memory at that rate
#   vmshift.ip=ADDR/LEN  address of eth0 (on the bed's network), none when absent
# Serial console protocol: the host sends "vmshift:<id>:<command>", the guest
# answers with the command's output and a line "vmshift-done:<id>:<rc>".
# Commands: ping, checksum (sha256 of /dev/vda -> "SUM <hex>"), status, or any shell line.
/bin/busybox mkdir -p /proc /sys /dev /tmp /sbin /usr/bin /usr/sbin
/bin/busybox --install -s
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
for m in $(cat /lib/modules/load-order); do insmod "/lib/modules/$m" 2>/dev/null; done
fill=0
dirty=0
addr=
for arg in $(cat /proc/cmdline); do
    case "$arg" in
        vmshift.fill=*) fill="${arg#*=}" ;;
        vmshift.dirty=*) dirty="${arg#*=}" ;;
        vmshift.ip=*) addr="${arg#*=}" ;;
    esac
done
ip link set lo up
if [ -n "$addr" ]; then
    ip link set eth0 up
    ip addr add "$addr" dev eth0
fi
exec </dev/ttyS0 >/dev/ttyS0 2>&1
stty -echo
/bin/memhog "$fill" "$dirty" >/tmp/memhog.log 2>&1 &
until grep -q FILLED /tmp/memhog.log 2>/dev/null; do sleep 0.1; done
echo "VMSHIFT-READY fill=$fill dirty=$dirty"

run_command() {
    case "$1" in
        ping) echo "PONG $(cut -d' ' -f1 /proc/uptime)" ;;
        checksum) echo "SUM $(sha256sum /dev/vda | cut -d' ' -f1)" ;;
        status) cat /tmp/memhog.log; free -m ;;
        *) sh -c "$1" ;;
    esac
}

while true; do
    if ! read -r line; then sleep 0.2; continue; fi
    case "$line" in
        vmshift:*:*)
            rest="${line#vmshift:}"
            id="${rest%%:*}"
            run_command "${rest#*:}"
            echo "vmshift-done:$id:$?"
            ;;
    esac
done
