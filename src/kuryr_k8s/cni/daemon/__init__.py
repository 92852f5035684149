"""The per-node CNI daemon: KuryrPort cache, request service, HTTP front, composition."""
