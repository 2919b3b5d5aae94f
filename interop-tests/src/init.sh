#!/bin/busybox sh
# /init of the udrbd lab initramfs. Mounts the host's / (9p, read-only) under a tmpfs overlay,
# links /usr/lib/modules to the unpacked Debian kernel's modules, mounts the run's results
# folder (9p, read-write) on /out and switches root into /out/stage2.sh, which runs the test.
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
arg() { sed -n "s/.*$1=\([^ ]*\).*/\1/p" /proc/cmdline; }
for m in $(cat /mods/order); do
    insmod "/mods/$m.ko" || echo "vmlab-init: insmod $m failed"
done
mkdir -p /lower /rw /newroot
mount -t 9p -o trans=virtio,version=9p2000.L,msize=1048576,ro,cache=loose hostroot /lower \
    || { echo "vmlab-init: FATAL: cannot mount the host root over 9p"; echo o >/proc/sysrq-trigger; }
mount -t tmpfs -o size=50% tmpfs /rw
mkdir -p /rw/upper /rw/work
mount -t overlay overlay -o lowerdir=/lower,upperdir=/rw/upper,workdir=/rw/work /newroot \
    || { echo "vmlab-init: FATAL: overlay mount failed"; echo o >/proc/sysrq-trigger; }
# The host may have /lib -> usr/lib and no modules for this kernel: point it at ours.
rm -rf /newroot/usr/lib/modules
ln -s "$(arg vmlab.kmod)" /newroot/usr/lib/modules
mkdir -p /newroot/out
mount -t 9p -o trans=virtio,version=9p2000.L,msize=1048576 out /newroot/out \
    || { echo "vmlab-init: FATAL: cannot mount the results folder"; echo o >/proc/sysrq-trigger; }
for d in proc sys dev; do mount --move /$d /newroot/$d; done
echo "vmlab-init: switching root at $(cut -d' ' -f1 /newroot/proc/uptime)s"
exec switch_root /newroot /bin/sh /out/stage2.sh
