# provium host-matrix, L1 stage 2 (PID 1 in the host's root under an overlay).
# Runs /run/hm/command with the host's tools, prints its exit status as a
# marker line the host-matrix reads, and powers off.
B=/run/hm/busybox
$B mkdir -p /dev/pts /dev/shm
$B mount -t devpts -o gid=5,mode=620 devpts /dev/pts
$B mount -t tmpfs -o mode=1777 shm /dev/shm
$B mount -t cgroup2 cgroup2 /sys/fs/cgroup 2>/dev/null
$B ip link set lo up
$B hostname l1
echo "host-matrix: L1 up ($(cat /proc/uptime | $B cut -d' ' -f1) s after its kernel started):" \
  "kvm=$([ -c /dev/kvm ] && echo yes || echo no)" \
  "vhost-vsock=$([ -c /dev/vhost-vsock ] && echo yes || echo no)"
/bin/sh /run/hm/command < /dev/null
code=$?
echo
echo "@@host-matrix-exit=$code@@"
$B sync
echo 0 > /proc/sys/kernel/printk
echo o > /proc/sysrq-trigger
$B sleep 10
