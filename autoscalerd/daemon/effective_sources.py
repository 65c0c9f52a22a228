"""A policy's metric sources as the scraper uses them: DaemonConfig defaults and the
`--insecure-skip-tls-verify` flag filled in, and who turned TLS verification off where."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace

from autoscalerd.config.model import DaemonConfig, MetricSource, Policy, TLSConfig

__all__ = ["effective_source", "insecure_sources"]


def effective_source(
    source: MetricSource, daemon: DaemonConfig, insecure_default: bool
) -> MetricSource:
    """The source with DaemonConfig defaults (and `--insecure-skip-tls-verify`) filled in.

    Precedence: the source's own setting, then the DaemonConfig's, then the command-line flag.
    The DaemonConfig's token applies to https sources only (never sent in clear text).
    """
    base = daemon.tls
    if insecure_default and base.insecure_skip_verify is None:
        base = replace(base, insecure_skip_verify=True)
    https = source.protocol == "https"
    tls = source.tls.merged_over(base) if https else TLSConfig()
    return replace(source, tls=tls, authorization=daemon.authorization_for(source))


def insecure_sources(
    policy: Policy, daemon: DaemonConfig, insecure_default: bool
) -> Iterator[tuple[int, MetricSource, str]]:
    """(index, source, what set it) of each https source that skips TLS verification (the
    explicit bypass): the source's `tlsConfig`, the DaemonConfig's, or the command-line flag."""
    for i, source in enumerate(policy.sources):
        eff = effective_source(source, daemon, insecure_default)
        if eff.protocol == "https" and eff.tls.insecure_skip_verify:
            yield (
                i,
                source,
                "tlsConfig.insecureSkipVerify"
                if source.tls.insecure_skip_verify
                else "DaemonConfig tlsConfig.insecureSkipVerify"
                if daemon.tls.insecure_skip_verify
                else "--insecure-skip-tls-verify",
            )
