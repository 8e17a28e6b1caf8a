#!/bin/sh
# vmshift: first boot on KVM. Runs once, logs to /var/log/vmshift-firstboot.log
# and to the console, reports what the guest says of itself, and removes itself.
LOG=/var/log/vmshift-firstboot.log
say() { echo "vmshift-firstboot: $*"; echo "$(date '+%F %T') $*" >> "$LOG"; }

say "start"
@EARLY@

# What the guest says of itself, once boot has settled: read by --verify-boot.
if command -v systemctl >/dev/null 2>&1; then
    timeout 600 systemctl is-system-running --wait >/dev/null 2>&1
fi
# An interface being brought up can show its address a moment before its UP
# flag (seen once under TCG): give links that have an address up to 20 s. One
# that stays down is still reported down.
links_settled() {
    for dev in $(ip -o addr show scope global | awk '{print $2}' | sort -u); do
        ip -o link show "$dev" | grep -q '[<,]UP[,>]' || return 1
    done
}
waited=0
while ! links_settled && [ "$waited" -lt 20 ]; do sleep 1; waited=$((waited + 1)); done
report() { echo "vmshift-report: $*"; echo "$(date '+%F %T') report: $*" >> "$LOG"; }
ip -o link show | awk '{name=$2; sub(":$", "", name); sub("@.*", "", name);
    state="DOWN"; if ($3 ~ /[<,]UP[,>]/) state="UP";
    mac="-"; for (i = 1; i <= NF; i++) if ($i == "link/ether") mac=$(i+1);
    print name, mac, state}' | while read -r name mac state; do
    report "link $name $mac $state"
done
ip -o addr show | awk '$3 == "inet" || $3 == "inet6" {print $2, $3, $4}' | \
    while read -r name family addr; do report "addr $name $family $addr"; done
failed=$(systemctl --failed --no-legend --plain 2>/dev/null | awk '{print $1}' | tr '\n' ' ')
report "failed ${failed:-none}"
if command -v vmtoolsd >/dev/null 2>&1; then report "vmware-tools present"; \
    else report "vmware-tools absent"; fi
if command -v qemu-ga >/dev/null 2>&1; then report "guest-agent present"; \
    else report "guest-agent absent"; fi
report "end"

# Slow steps (package downloads) after the report, so verification does not wait.
@LATE@

systemctl disable vmshift-firstboot.service >/dev/null 2>&1
rm -f /etc/systemd/system/vmshift-firstboot.service /usr/local/lib/vmshift/firstboot.sh
say "done"
exit 0
