"""cni layer."""
