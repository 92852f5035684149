"""Kuryr for Kubernetes: pods on OpenStack Neutron ports."""

__version__ = "0.1.0.dev0"
