"""``python -m kuryr_k8s.sandbox.kubeapi``: run the emulator standalone."""

from kuryr_k8s.sandbox.kubeapi.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
