#!/usr/bin/env bash
# k8s_interop.sh with the three CA keys (kubernetes-ca, etcd-ca, front-proxy-ca) generated in a swtpm
# instead of SoftHSM2: the same real 3-member etcd cluster and the same kubectl handshakes.
export HWCA_K8S_BACKEND=tpm2
exec bash "$HWCA_SOURCE_DIR/softhsm-tests/cli/k8s_interop.sh"
