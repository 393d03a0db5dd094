//go:build tools

// Package controlplane pins the Kubernetes and etcd modules that e2e/cluster
// builds into a local control plane. It holds no code of its own.
package controlplane
