"""`autoscalerd` with bench-only changes, to measure what they would fix.

Usage: python bench/_daemon_patched.py --api-pool N [--ssl-read-buffer BYTES] run ...
(the rest is `autoscalerd`'s command line).

`--api-pool N`: kubernetes_asyncio's kubernetes_asyncio's `Configuration.connection_pool_maxsize` defaults to 100
simultaneous connections to the API server, and the daemon keeps one long-lived pod watch per
(namespace, selector): with 100 policies the watches hold every connection and each /scale
read, /scale write and Event waits for one until its 10 s timeout. This wrapper sets the pool
size before the daemon starts, so that bench/daemon_scale.py can measure the rest of the
daemon at 100 policies; the proper fix belongs in `autoscalerd/kube/` (see
bench/README-daemon.md).

`--ssl-read-buffer BYTES`: asyncio's `SSLProtocol` allocates a 256 KiB `bytearray` read buffer
per TLS connection (`asyncio.sslproto.SSLProtocol.max_size`); with 1,000 kept-alive pod
connections that alone is 250 MiB of RSS. This sets the class attribute before the daemon
starts (pages larger than the buffer are still read, in several calls).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> int:
    argv = sys.argv[1:]
    if len(argv) < 2 or argv[0] != "--api-pool":
        print(__doc__, file=sys.stderr)
        return 2
    pool = int(argv[1])
    argv = argv[2:]
    if len(argv) >= 2 and argv[0] == "--ssl-read-buffer":
        import asyncio.sslproto

        asyncio.sslproto.SSLProtocol.max_size = int(argv[1])
        argv = argv[2:]
    from kubernetes_asyncio.client import configuration

    original = configuration.Configuration.__init__

    def init(self: Any, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        self.connection_pool_maxsize = pool  # 0: no limit (aiohttp TCPConnector)

    configuration.Configuration.__init__ = init  # type: ignore[method-assign]
    from autoscalerd.cli import main as autoscalerd_main

    return autoscalerd_main(argv)


if __name__ == "__main__":
    sys.exit(main())
