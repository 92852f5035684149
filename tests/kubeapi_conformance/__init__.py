"""Kubernetes API conformance suite (emulator by default, any cluster with --kubeconfig)."""
