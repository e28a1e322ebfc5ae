# The real node's layout, shared by e2e/cluster/node-up and node-down.
# shellcheck shell=bash

NODE_NAME=modelship-node
# The kubelet refuses a loopback node IP, and the API server reaches the kubelet (logs, exec)
# at the node's address: an interface of its own gives the node an address on any machine.
NODE_IFACE=ms-node0
NODE_IFACE_PEER=ms-node0-peer
NODE_IP=${MODELSHIP_NODE_IP:-10.250.0.1}
# Pods of the real node, apart from the fake IPs KWOK hands out (POD_CIDR).
NODE_POD_CIDR=10.245.0.0/24
NODE_BRIDGE=ms-cni0
# Pods that do not tolerate this taint stay on the KWOK nodes.
NODE_TAINT_KEY=modelship.io/node
NODE_TAINT_VALUE=real
# A namespace with these annotations puts every pod on the real node (the API server's
# PodNodeSelector and PodTolerationRestriction admission plugins): kubectl annotate ns X "${NODE_NAMESPACE_ANNOTATIONS[@]}"
NODE_NAMESPACE_ANNOTATIONS=(
  "scheduler.alpha.kubernetes.io/node-selector=$NODE_TAINT_KEY=$NODE_TAINT_VALUE"
  "scheduler.alpha.kubernetes.io/defaultTolerations=[{\"key\":\"$NODE_TAINT_KEY\",\"operator\":\"Equal\",\"value\":\"$NODE_TAINT_VALUE\",\"effect\":\"NoSchedule\"}]"
)

# Cluster DNS: the kube-dns Service, served by CoreDNS on the node's address.
CLUSTER_DNS_IP=10.96.0.10
COREDNS_HEALTH_PORT=${MODELSHIP_COREDNS_HEALTH_PORT:-16253}
COREDNS_READY_PORT=${MODELSHIP_COREDNS_READY_PORT:-16254}

KUBELET_PORT=${MODELSHIP_KUBELET_PORT:-16250}
KUBELET_HEALTHZ_PORT=${MODELSHIP_KUBELET_HEALTHZ_PORT:-16248}
KUBE_PROXY_METRICS_PORT=${MODELSHIP_KUBE_PROXY_METRICS_PORT:-16249}
KUBE_PROXY_HEALTHZ_PORT=${MODELSHIP_KUBE_PROXY_HEALTHZ_PORT:-16256}

NODE_STATE=$STATE/node
CONTAINERD_SOCK=$NODE_STATE/containerd.sock
CNI_BIN_DIR=/usr/lib/cni
# Built by e2e/images/build; containerd's sandbox image.
PAUSE_IMAGE_NAME=modelship.local/pause:e2e
# Host settings the kubelet, kube-proxy and the CNI bridge change; node-down restores them.
NODE_SYSCTLS=(net.ipv4.ip_forward net.ipv4.conf.all.route_localnet net.bridge.bridge-nf-call-iptables
  vm.overcommit_memory vm.panic_on_oom kernel.panic kernel.panic_on_oops kernel.keys.root_maxkeys
  kernel.keys.root_maxbytes)
# Fixed paths: the kubelet links container logs in /var/log/containers and serves device
# plugins in /var/lib/kubelet/device-plugins whatever its root directory; containerd's shims
# put their sockets in /run/containerd/s and the CRI pins pod network namespaces in
# /run/netns. node-down removes those that node-up created.
NODE_HOST_DIRS=(/var/log/containers /var/lib/kubelet /run/containerd /run/netns)
# In start order; stopped in reverse.
NODE_COMPONENTS=(containerd coredns kubelet kube-proxy)

# crictl's configuration (written by node-up): crictl --config=e2e/.cluster/node/crictl.yaml ps
CRICTL_CONFIG=$NODE_STATE/crictl.yaml
crictl() { "$CRICTL_BIN/crictl" --config="$CRICTL_CONFIG" "$@"; }
ctr() { command ctr --address="$CONTAINERD_SOCK" --namespace=k8s.io "$@"; }
