#!/bin/sh
# /init of the kernel-lab initramfs (busybox), built by tests/kernel/lab.py.
#
# Stage 1 (PID 1 in the initramfs): load the lab's modules, mount the host's / (shared read-only
# over virtio-9p) under a tmpfs overlay so it is writable but nothing reaches the host, mount the
# per-boot output share at /run/kl-out, give the new root this kernel's modules, switch_root.
# Stage 2 (still PID 1, now the host's /bin/sh inside the host root): run /run/kl-out/run.sh,
# record its exit code and power off.
#
# switch_root rather than chroot: systemd's tools (udevadm) refuse to work "in a chroot".
# PID 1 must never exit (that panics the kernel), so every path ends in halt_guest.

OUT=/run/kl-out

mark() {
    echo "KLAB $* uptime=$(cut -d' ' -f1 /proc/uptime)"
}

halt_guest() {
    sync
    echo o > /proc/sysrq-trigger  # immediate power-off; QEMU exits
    sleep 30
}

fatal() {
    echo "KLAB-FATAL: $*"
    halt_guest
}

stage1() {
    export PATH=/sbin:/bin:/usr/sbin:/usr/bin
    mount -t proc proc /proc
    mount -t sysfs sysfs /sys
    mount -t devtmpfs devtmpfs /dev
    exec </dev/console >/dev/console 2>&1
    mark init-start

    while read -r module; do
        [ -n "$module" ] && { modprobe "$module" || echo "KLAB-WARN: modprobe $module failed"; }
    done < /etc/klab/boot-modules
    mark modules-loaded

    # cache=loose is fine for the lower layer: the host root does not change during a boot.
    mount -t 9p -o trans=virtio,version=9p2000.L,ro,msize=524288,cache=loose hostroot /lower \
        || fatal "cannot mount the host root over 9p"
    mount -t tmpfs -o size=1g,mode=0755 rw /rw || fatal "cannot mount the overlay tmpfs"
    mkdir -p /rw/upper /rw/work
    mount -t overlay overlay -o lowerdir=/lower,upperdir=/rw/upper,workdir=/rw/work /newroot \
        || fatal "cannot mount the overlay root"

    mount -t proc proc /newroot/proc
    mount -t sysfs sysfs /newroot/sys
    mount -t devtmpfs devtmpfs /newroot/dev
    mkdir -p /newroot/dev/pts /newroot/dev/shm
    mount -t devpts devpts /newroot/dev/pts
    mount -t tmpfs -o mode=1777 shm /newroot/dev/shm
    mount -t tmpfs -o mode=0755 run /newroot/run
    [ -d /newroot/sys/kernel/config ] && mount -t configfs configfs /newroot/sys/kernel/config

    # No cache=loose here: the host reads these files while and after the guest writes them.
    mkdir -p /newroot$OUT
    mount -t 9p -o trans=virtio,version=9p2000.L,msize=524288 out /newroot$OUT \
        || fatal "cannot mount the output share"

    # The host's /lib/modules belongs to the host kernel; modprobe in the guest needs ours.
    kver=$(uname -r)
    mkdir -p /newroot/lib/modules
    rm -rf "/newroot/lib/modules/$kver"
    cp -a "/lib/modules/$kver" /newroot/lib/modules/ || fatal "cannot copy the guest modules"

    cp /init /newroot/run/klab-init.sh
    mark root-ready
    exec switch_root /newroot /usr/bin/env -i \
        PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
        HOME=/root TERM=dumb LANG=C.UTF-8 PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 \
        /bin/sh /run/klab-init.sh --klab-stage2
    fatal "switch_root failed"
}

stage2() {
    cd /
    start=$(cut -d' ' -f1 /proc/uptime)
    echo "scenario_start $start" > $OUT/klab-times
    echo "KLAB-SCENARIO-START uptime=$start"
    /bin/sh $OUT/run.sh
    rc=$?
    end=$(cut -d' ' -f1 /proc/uptime)
    echo "scenario_end $end" >> $OUT/klab-times
    echo "KLAB-SCENARIO-EXIT rc=$rc uptime=$end"
    echo "$rc" > $OUT/exit_code
    halt_guest
}

if [ "${1:-}" = "--klab-stage2" ]; then
    stage2
else
    stage1
fi
