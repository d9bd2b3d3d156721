#!/bin/sh
# provium host-matrix, L1 stage 1 (PID 1 in the initramfs).
# Loads the modules of the host kind named by hm.kind= on the kernel command
# line, mounts the host's root (virtiofs tag "hostroot") read-only under a
# tmpfs overlay, and switches to it for stage 2 (/run/hm/stage2).
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev

fail() {
  echo "host-matrix: L1 stage 1: $*"
  echo "@@host-matrix-exit=125@@"
  sync
  echo o > /proc/sysrq-trigger
  while :; do sleep 1; done
}

kind=$(sed -n 's/.*hm\.kind=\([a-z-]*\).*/\1/p' /proc/cmdline)
case "$kind" in
  kvm-kernel-vsock) skip="" ;;
  kvm-vhost-user)   skip="vhost_vsock" ;;      # no /dev/vhost-vsock
  tcg-kernel-vsock) skip="kvm_amd kvm" ;;      # no /dev/kvm
  *) fail "unknown host kind '$kind'" ;;
esac

M=/lib/modules/provium
for f in $(cat $M/order); do
  name=${f%.ko}
  case " $skip " in *" $name "*) continue ;; esac
  insmod "$M/$f" || fail "insmod $f failed"
done

mkdir -p /hostroot /rw /newroot
mount -t virtiofs -o ro hostroot /hostroot || fail "cannot mount the host's root over virtiofs"
mount -t tmpfs -o mode=0755,size=75% rw /rw || fail "cannot mount the overlay's tmpfs"
mkdir -p /rw/upper /rw/work
mount -t overlay overlay -o lowerdir=/hostroot,upperdir=/rw/upper,workdir=/rw/work /newroot \
  || fail "cannot mount the overlay"
for d in proc sys dev; do
  mount --move "/$d" "/newroot/$d" || fail "cannot move /$d"
done
for d in run tmp; do
  mount -t tmpfs -o mode=1777 "$d" "/newroot/$d" || fail "cannot mount /$d"
done
mkdir -p /newroot/run/hm
cp /bin/busybox /hm/* /newroot/run/hm/ || fail "cannot copy stage 2"
exec switch_root /newroot /run/hm/busybox sh /run/hm/stage2
