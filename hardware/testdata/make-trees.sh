#!/bin/sh
# Regenerates the fake sysfs/procfs trees the tests read. They mirror real sysfs, symbolic links
# included: sys/class/net/<if> links into sys/devices/..., <if>/device links to the PCI (or virtio)
# device, and device/driver links to sys/bus/.../drivers/<name>, whose last component is the
# driver's name (the link's target need not exist, exactly as readlink sees it).
#
#   reference-2s-4port  dual Xeon, 2 x 4 cores with hyperthreading (cpu0-3 socket 0, cpu4-7
#                       socket 1, their siblings cpu8-11 and cpu12-15), 2 NUMA nodes, 4 GB,
#                       4 x 1 GbE igb (eth0, eth1 on node 0; eth2, eth3 on node 1), 4 queues each,
#                       Debian 12's kernel 6.1.
#   two-core-vm         like the CI machine: 2 vCPUs, 1 node, 2 GB, virtio_net eth0 with one queue
#                       pair (numa_node -1), plus lo and ifb0 to be skipped, kernel 6.18.
#   broken-no-online    cpu/online missing: reading must fail naming the file.
set -eu
cd "$(dirname "$0")"

w() { mkdir -p "$(dirname "$1")"; printf '%s\n' "$2" > "$1"; }

cpu() { # root cpu core package siblings
    t="$1/sys/devices/system/cpu/cpu$2/topology"
    w "$t/core_id" "$3"
    w "$t/physical_package_id" "$4"
    w "$t/thread_siblings_list" "$5"
}

nic() { # root ifname devpath driver_link numa|none queues speed mac
    root="$1"; name="$2"; devpath="$3"; drv="$4"; numa="$5"; queues="$6"; speed="$7"; mac="$8"
    dev="$root/sys/devices/$devpath"
    netdir="$dev/net/$name"
    mkdir -p "$netdir" "$root/sys/class/net"
    i=0
    while [ "$i" -lt "$queues" ]; do
        w "$netdir/queues/rx-$i/rps_cpus" "0"
        w "$netdir/queues/tx-$i/xps_cpus" "0"
        i=$((i + 1))
    done
    w "$netdir/speed" "$speed"
    w "$netdir/mtu" "1500"
    w "$netdir/address" "$mac"
    [ "$numa" = none ] || w "$dev/numa_node" "$numa"
    ln -sfn "$drv" "$dev/driver"
    ln -sfn "../../../$(basename "$dev")" "$netdir/device"
    ln -sfn "../../devices/$devpath/net/$name" "$root/sys/class/net/$name"
}

virtual_if() { # root ifname
    d="$1/sys/devices/virtual/net/$2"
    w "$d/queues/rx-0/rps_cpus" "0"
    w "$d/queues/tx-0/xps_cpus" "0"
    w "$d/mtu" "1500"
    mkdir -p "$1/sys/class/net"
    ln -sfn "../../devices/virtual/net/$2" "$1/sys/class/net/$2"
}

# --- reference-2s-4port -------------------------------------------------------------------------
R=reference-2s-4port
rm -rf "$R"
w "$R/sys/devices/system/cpu/online" "0-15"
w "$R/sys/devices/system/cpu/possible" "0-15"
for c in 0 1 2 3; do
    cpu "$R" "$c" "$c" 0 "$c,$((c + 8))"
    cpu "$R" "$((c + 8))" "$c" 0 "$c,$((c + 8))"
    cpu "$R" "$((c + 4))" "$c" 1 "$((c + 4)),$((c + 12))"
    cpu "$R" "$((c + 12))" "$c" 1 "$((c + 4)),$((c + 12))"
done
w "$R/sys/devices/system/node/online" "0-1"
w "$R/sys/devices/system/node/node0/cpulist" "0-3,8-11"
w "$R/sys/devices/system/node/node1/cpulist" "4-7,12-15"
w "$R/proc/sys/kernel/osrelease" "6.1.0-18-amd64"
cat > "$R/proc/meminfo" <<'MEM'
MemTotal:        4039000 kB
MemFree:         3101232 kB
MemAvailable:    3512044 kB
Buffers:           41212 kB
Cached:           502116 kB
MEM
drv=../../../../bus/pci/drivers/igb
nic "$R" eth0 "pci0000:00/0000:00:01.0/0000:01:00.0" "$drv" 0 4 1000 "a0:36:9f:00:00:00"
nic "$R" eth1 "pci0000:00/0000:00:01.0/0000:01:00.1" "$drv" 0 4 1000 "a0:36:9f:00:00:01"
nic "$R" eth2 "pci0000:80/0000:80:01.0/0000:81:00.0" "$drv" 1 4 1000 "a0:36:9f:00:00:02"
nic "$R" eth3 "pci0000:80/0000:80:01.0/0000:81:00.1" "$drv" 1 4 1000 "a0:36:9f:00:00:03"
virtual_if "$R" lo
{
    printf '     '
    for c in $(seq 0 15); do printf '      CPU%-4s' "$c"; done
    printf '\n'
    irq=40
    for port in 0 1 2 3; do
        for q in link 0 1 2 3; do
            if [ "$q" = link ]; then name="eth$port"; else name="eth$port-TxRx-$q"; fi
            printf '%4d: ' "$irq"
            for c in $(seq 0 15); do printf '%10d ' 0; done
            printf ' IR-PCI-MSI %d-edge      %s\n' "$((524288 * (port + 1) + irq))" "$name"
            irq=$((irq + 1))
        done
    done
    printf ' NMI: '
    for c in $(seq 0 15); do printf '%10d ' 0; done
    printf '  Non-maskable interrupts\n'
} > "$R/proc/interrupts"

# --- two-core-vm --------------------------------------------------------------------------------
V=two-core-vm
rm -rf "$V"
w "$V/sys/devices/system/cpu/online" "0-1"
w "$V/sys/devices/system/cpu/possible" "0-1"
cpu "$V" 0 0 0 0
cpu "$V" 1 1 0 1
w "$V/sys/devices/system/node/node0/cpulist" "0-1"
w "$V/proc/sys/kernel/osrelease" "6.18.44-fc-v595"
cat > "$V/proc/meminfo" <<'MEM'
MemTotal:        2013036 kB
MemFree:         1630444 kB
MemAvailable:    1802112 kB
MEM
# virtio: eth0's device is virtio2, a child of the PCI function that holds numa_node and msi_irqs.
pci="$V/sys/devices/pci0000:00/0000:00:03.0"
w "$pci/numa_node" "-1"
for irq in 37 38 39; do w "$pci/msi_irqs/$irq" "msix"; done
nic "$V" eth0 "pci0000:00/0000:00:03.0/virtio2" "../../../../bus/virtio/drivers/virtio_net" none 1 -1 "02:fc:00:00:00:01"
virtual_if "$V" lo
virtual_if "$V" ifb0
cat > "$V/proc/interrupts" <<'IRQ'
           CPU0       CPU1
 37:          0          0 PCI-MSIX-0000:00:03.0   0-edge      virtio2-config
 38:          0       1928 PCI-MSIX-0000:00:03.0   1-edge      virtio2-input.0
 39:       1371          0 PCI-MSIX-0000:00:03.0   2-edge      virtio2-output.0
NMI:          0          0   Non-maskable interrupts
IRQ

# --- broken-no-online ---------------------------------------------------------------------------
B=broken-no-online
rm -rf "$B"
w "$B/sys/devices/system/cpu/possible" "0-1"
cpu "$B" 0 0 0 0
w "$B/proc/meminfo" "MemTotal:        2013036 kB"
