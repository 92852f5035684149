"""deploy layer: the manifests (deploy/) and what the sandbox shares with them."""
