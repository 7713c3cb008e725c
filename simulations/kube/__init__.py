"""The simulated Kubernetes control plane: real etcd and kube-apiserver on loopback.

`build` compiles the pinned upstream binaries once into a cache outside the
checkout; `controlplane` runs them with generated certificates and installs the
KServe CRD; `pytest_plugin` offers the session-wide `cluster` fixture. Everything
here does I/O (processes, ports, files); the controller never imports it.
"""
