"""`tlsConfig` and `authorization` of a metric source (and their DaemonConfig defaults).

Field names follow Prometheus Operator's `SafeTLSConfig` and `SafeAuthorization`. Inline
secrets are refused with a message: they would sit in the policy file.
"""

from __future__ import annotations

from typing import Any

from autoscalerd.config.model import Authorization, TLSConfig
from autoscalerd.config.problems import Document, Path
from autoscalerd.config.readers import (
    check_keys,
    describe,
    read_bool,
    read_mapping,
    read_string,
)

__all__ = ["TLS_FIELDS", "TLS_REJECTED", "read_authorization", "read_tls"]

TLS_FIELDS = (
    "insecureSkipVerify",
    "caFile",
    "serverName",
    "certFile",
    "keyFile",
    "minVersion",
    "strictX509",
)
TLS_REJECTED = {
    "ca": "inline CA data is not supported; put the bundle in a file and set caFile",
    "cert": "inline certificates are not supported; set certFile",
    "keySecret": "Secret references are not supported; mount the Secret and set keyFile",
    "maxVersion": "maxVersion is not supported; TLS 1.3 is always allowed",
}
_TLS_VERSIONS = ("TLS12", "TLS13")
_TLS_STRINGS = (
    ("caFile", "ca_file"),
    ("serverName", "server_name"),
    ("certFile", "cert_file"),
    ("keyFile", "key_file"),
)
"""String fields: policy key -> `TLSConfig` field."""
_AUTHORIZATION_REJECTED = {
    "credentials": "inline credentials are not supported (they would sit in the policy "
    "file); put the token in a file and set credentialsFile",
}


def read_tls(doc: Document, path: Path, value: Any) -> TLSConfig | None:
    data = read_mapping(doc, path, value)
    if data is None:
        return None
    check_keys(doc, path, data, TLS_FIELDS, TLS_REJECTED)
    out: dict[str, Any] = {}
    if "insecureSkipVerify" in data:
        out["insecure_skip_verify"] = read_bool(
            doc, (*path, "insecureSkipVerify"), data["insecureSkipVerify"]
        )
    if "strictX509" in data:
        out["strict_x509"] = read_bool(doc, (*path, "strictX509"), data["strictX509"])
    for key, attr in _TLS_STRINGS:
        if key in data:
            out[attr] = read_string(doc, (*path, key), data[key])
    if "minVersion" in data:
        min_version = data["minVersion"]
        if min_version in _TLS_VERSIONS:
            out["min_version"] = min_version
        elif min_version in ("TLS10", "TLS11"):
            doc.add((*path, "minVersion"), f"{min_version} is not allowed; the minimum is TLS12")
        else:
            doc.add((*path, "minVersion"), f"must be TLS12 or TLS13, got {describe(min_version)}")
    if ("certFile" in data) != ("keyFile" in data):
        missing = "keyFile" if "certFile" in data else "certFile"
        present = "certFile" if missing == "keyFile" else "keyFile"
        doc.add(
            (*path, present),
            f"a client certificate needs both certFile and keyFile; add {missing}",
            at_key=True,
        )
    if out.get("insecure_skip_verify") and any(k in data for k in ("caFile", "serverName")):
        doc.add(
            (*path, "insecureSkipVerify"),
            "insecureSkipVerify: true turns off the verification that caFile/serverName configure; "
            "remove one or the other",
            at_key=True,
        )
    return TLSConfig(**{k: v for k, v in out.items() if v is not None})


def read_authorization(doc: Document, path: Path, value: Any) -> Authorization | None:
    """A bearer token file; `type` may be left out (Bearer is the only one)."""
    data = read_mapping(doc, path, value)
    if data is None:
        return None
    check_keys(doc, path, data, ("type", "credentialsFile"), _AUTHORIZATION_REJECTED)
    if "type" in data:
        auth_type = read_string(doc, (*path, "type"), data["type"])
        if auth_type is not None and auth_type.lower() != "bearer":
            doc.add((*path, "type"), f"only Bearer is supported, got {auth_type!r}")
            return None
    if "credentialsFile" not in data:
        if "credentials" not in data:
            doc.add(
                path, "credentialsFile is required (a file holding the bearer token)", at_key=True
            )
        return None
    credentials = read_string(doc, (*path, "credentialsFile"), data["credentialsFile"])
    if credentials is None:
        return None
    return Authorization(type="Bearer", credentials_file=credentials)
