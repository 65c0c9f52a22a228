"""`autoscalerd` with bench-only changes, kept to reproduce the history in README-daemon.md.

Usage: python bench/_daemon_patched.py --api-pool N [--ssl-read-buffer BYTES] run ...
(the rest is `autoscalerd`'s command line).

`--api-pool N` sets kubernetes_asyncio's `Configuration.connection_pool_maxsize` before the
daemon starts. It measured the daemon past the stall that 100 per-selector watches caused in
the shared 100-connection pool; `autoscalerd/kube/` has since put watches and the Lease on
pools of their own and shares one watch per namespace, so today this only resizes the pool of
ordinary calls.

`--ssl-read-buffer BYTES` sets `asyncio.sslproto.SSLProtocol.max_size` (256 KiB per TLS
connection). The scraper no longer uses `SSLProtocol` (it runs TLS over `ssl.MemoryBIO`), so
today this only affects the daemon's connections to the API server.
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
