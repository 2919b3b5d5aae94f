# Runs as the guest's PID 1 after switch_root: finish the userland set-up, run the test script
# with its output in /out/log, record its exit status and the kernel log, power off.
mount -t tmpfs tmpfs /run
mkdir -p /run/lock /dev/pts /dev/shm /scratch /var/lib/drbd
mount -t tmpfs tmpfs /scratch      # test data; /tmp is the host's /tmp seen through the overlay
mount -t devpts devpts /dev/pts
ln -sf /proc/self/fd /dev/fd       # process substitution needs it
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C
hostname vmlab
ip link set lo up                  # drbdadm and tcpdump refuse a down lo
echo "VMLAB_READY $(cut -d' ' -f1 /proc/uptime)"
cd /scratch
bash /out/script.sh > /out/log 2>&1 < /dev/null
echo $? > /out/rc.tmp && mv /out/rc.tmp /out/rc
dmesg > /out/dmesg 2>&1
echo "VMLAB_DONE rc=$(cat /out/rc) uptime=$(cut -d' ' -f1 /proc/uptime)"
sync
echo o > /proc/sysrq-trigger
sleep 60
