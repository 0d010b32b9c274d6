#!/bin/sh
# Guest side of the kernel lane's `systemd` boot (test_systemd.py): the real systemd, the real
# dbus-daemon it starts (the host's dbus.socket/dbus.service) and the installed sanbusd unit.
#
#   systemd_guest.sh REPO PYTHON DRIVER_PYTHON
#
# Runs as stage 2's run.sh (guest_init.sh) on the writable overlay root, which it changes freely
# (nothing reaches the host): installs sanbusd with packaging/install.sh --destdir / (so the
# daemon, its unit and its activation file exist only in this guest), adds a drop-in with a short
# WatchdogSec, a target and a driver unit (systemd_driver.py), then runs /lib/systemd/systemd
# as PID 1 of a new PID + mount namespace: PID 1 of the guest stays the lab's /init, which writes
# the exit code and powers the guest off whatever systemd does. The driver's exit code comes back
# through $OUT/systemd-rc, and then this script ends the namespace.
set -u
OUT=/run/kl-out
REPO=$1
PYTHON=$2
DRIVER_PYTHON=$3
HERE=$REPO/tests/kernel

echo "systemd lab: installing sanbusd (python $PYTHON)"
install_sanbusd() {
    bash "$REPO/packaging/install.sh" --destdir / --prefix /usr --unitdir /lib/systemd/system \
        --python "$PYTHON" --man-python "$DRIVER_PYTHON" >"$OUT/install.log" 2>&1
}
# Once (of ten boots) install.sh failed writing the launcher into the just-created
# /usr/libexec/sanbusd ("No such file or directory"), not reproduced since: one retry.
if ! install_sanbusd; then
    echo "systemd lab: install.sh failed, once more:"; tail -5 "$OUT/install.log"
    install_sanbusd || { echo "systemd lab: install.sh failed:"; tail -20 "$OUT/install.log"; exit 3; }
fi

# Units of the host's packages this boot does not need (they would only slow the TCG guest
# down; systemd-tmpfiles-setup would walk the whole host root over 9p for minutes): masked on
# the overlay. udev, journald, dbus stay.
for unit in multipathd.service multipathd.socket open-iscsi.service iscsid.socket iscsid.service \
        systemd-timesyncd.service systemd-pstore.service timers.target getty.target \
        serial-getty@ttyS0.service console-getty.service postgresql.service \
        systemd-networkd.service systemd-resolved.service networking.service \
        systemd-random-seed.service systemd-update-utmp.service systemd-tmpfiles-setup.service \
        systemd-tmpfiles-clean.timer ldconfig.service systemd-hwdb-update.service \
        systemd-journal-catalog-update.service systemd-update-done.service systemd-sysusers.service \
        systemd-pcrphase.service systemd-pcrphase-sysinit.service systemd-machine-id-commit.service; do
    ln -sf /dev/null "/etc/systemd/system/$unit"
done

mkdir -p /etc/systemd/system/sanbusd.service.d
cat >/etc/systemd/system/sanbusd.service.d/lab.conf <<'EOF'
# kernel lab (tests/kernel/systemd_guest.sh): a short watchdog so a stuck loop is seen quickly.
[Service]
WatchdogSec=3
EOF

cat >/etc/systemd/system/sanbus-lab.target <<'EOF'
[Unit]
Description=sanbusd kernel lab (systemd boot)
Requires=sanbus-lab.service
After=sanbus-lab.service
AllowIsolate=yes
EOF

cat >/etc/systemd/system/sanbus-lab.service <<EOF
[Unit]
Description=sanbusd kernel lab driver (tests/kernel/systemd_driver.py)
After=basic.target dbus.socket systemd-udevd.service
Wants=dbus.socket

[Service]
Type=oneshot
TimeoutStartSec=400
Environment=PYTHONPATH=$REPO:$HERE PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
ExecStart=$DRIVER_PYTHON $HERE/systemd_driver.py
StandardOutput=journal+console
StandardError=journal+console
# A driver that dies without its verdict still ends the boot.
ExecStopPost=/bin/sh -c '[ -s $OUT/systemd-rc ] || echo 5 >$OUT/systemd-rc'
EOF

# This guest is a QEMU VM, but the host root it shares is a Docker container's: without
# /.dockerenv systemd sees the VM (systemd-detect-virt: qemu) instead of "docker", and runs
# as on a real machine (container mode would skip units, e.g. ConditionVirtualization=!container).
rm -f /.dockerenv /run/.containerenv
rm -f "$OUT/systemd-rc"
echo "systemd lab: starting /lib/systemd/systemd (uptime $(cut -d' ' -f1 /proc/uptime))"
# systemd as PID 1 of its own PID namespace (and mount namespace, with its own /proc); the
# rest of the guest (kernel, /sys, /dev, /run, the overlay root) is the same.
unshare --pid --fork --mount --mount-proc --propagation private \
    /lib/systemd/systemd --system --unit=sanbus-lab.target \
    --show-status=false &
upid=$!
spid=
for _ in 1 2 3 4 5 6 7 8 9 10; do
    sleep 1; spid=$(cat /proc/$upid/task/$upid/children 2>/dev/null); spid=${spid%% *}
    [ -n "$spid" ] && break
done
# Once the driver has left its exit code, systemd (and with it the whole PID namespace) is
# SIGKILLed: its own shutdown would remount file systems read-only, and the output share's
# superblock is shared with this namespace. A stuck boot shows what it waits for; killed
# after 240 s.
waited=0
while kill -0 $upid 2>/dev/null; do
    sleep 1; waited=$((waited + 1))
    if [ $waited -ge 60 ] && [ $((waited % 20)) = 0 ]; then
        echo "systemd lab: jobs at $(cut -d' ' -f1 /proc/uptime):"
        nsenter -t "$spid" -p -m systemctl list-jobs --no-pager 2>&1 | head -20
        nsenter -t "$spid" -p -m systemctl --failed --no-pager 2>&1 | head -10
    fi
    [ -s "$OUT/systemd-rc" ] && { sleep 1; kill -KILL "$spid" 2>/dev/null; break; }
    [ $waited -ge 240 ] && kill -KILL $spid $upid 2>/dev/null
done
wait $upid
rc=$?
echo "systemd lab: systemd exited with $rc (uptime $(cut -d' ' -f1 /proc/uptime))"
if [ -s "$OUT/systemd-rc" ]; then
    exit "$(cat "$OUT/systemd-rc")"
fi
echo "systemd lab: the driver left no exit code"
exit 4
