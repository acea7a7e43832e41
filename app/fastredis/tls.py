"""TLS for ``rediss://`` URLs: redis-py's options and defaults; errors that say what to fix.

The gateway opens two clients on ``PARETO_REDIS_URL`` (redis-py for admin, feedback,
breakers and readiness; this package for the per-request calls), so a ``rediss://`` URL must
mean the same to both. :func:`tls_context` builds the context redis-py's ``SSLConnection``
builds (redis-py ≥ 6): certificates verified against the system store plus ``ssl_ca_certs`` /
``ssl_ca_path`` / ``ssl_ca_data``, the URL's host checked against the certificate, a client
certificate from ``ssl_certfile`` / ``ssl_keyfile`` (``ssl_password``), and
``ssl_cert_reqs``, ``ssl_check_hostname``, ``ssl_min_version``, ``ssl_ciphers``,
``ssl_include_verify_flags``, ``ssl_exclude_verify_flags`` parsed as redis-py parses them.
Unlike redis-py, which reads the files on its first connection, it reads them at once, so a
wrong path stops the gateway at start with a message naming the option.

:func:`explain_tls_failure` turns a failed handshake into a message saying what to change.
Nothing here ever puts the URL, its password or ``ssl_password`` in a message.
"""

from __future__ import annotations

import ssl
from collections.abc import Mapping

_CERT_REQS = {
    "none": ssl.CERT_NONE,
    "optional": ssl.CERT_OPTIONAL,
    "required": ssl.CERT_REQUIRED,
}
_FALSE = {"0", "F", "FALSE", "N", "NO"}  # redis-py's ``to_bool``: anything else is true
# OpenSSL's verify codes for a certificate that does not name the host we asked for.
_HOST_MISMATCH = {62, 64}  # X509_V_ERR_HOSTNAME_MISMATCH, X509_V_ERR_IP_ADDRESS_MISMATCH


def tls_context(query: Mapping[str, str]) -> ssl.SSLContext:
    """The SSL context for a ``rediss://`` URL's query options (ValueError for a bad one)."""
    reqs = query.get("ssl_cert_reqs", "required")
    if reqs not in _CERT_REQS:  # case-sensitive, as in redis-py
        raise ValueError(
            f"Invalid value for 'ssl_cert_reqs' in Redis URL: {reqs!r} "
            "(use required, optional or none)"
        )
    check_hostname = True
    if query.get("ssl_check_hostname"):
        check_hostname = query["ssl_check_hostname"].upper() not in _FALSE
    context = ssl.create_default_context()  # the system's trusted CAs
    context.check_hostname = check_hostname and reqs != "none"
    context.verify_mode = _CERT_REQS[reqs]
    for flag in _verify_flags(query, "ssl_include_verify_flags"):
        context.verify_flags |= flag
    for flag in _verify_flags(query, "ssl_exclude_verify_flags"):
        context.verify_flags &= ~flag
    certfile, keyfile = query.get("ssl_certfile"), query.get("ssl_keyfile")
    if keyfile and not certfile:
        raise ValueError("'ssl_keyfile' in Redis URL needs 'ssl_certfile' (the client certificate)")
    if certfile:
        try:
            context.load_cert_chain(
                certfile=certfile,
                keyfile=keyfile,
                password=query.get("ssl_password"),
            )
        except (OSError, ValueError) as exc:
            raise ValueError(
                "Cannot load the client certificate of the Redis URL "
                f"(ssl_certfile={certfile!r}, ssl_keyfile={keyfile!r}): {_reason(exc)}"
            ) from None
    cafile, capath, cadata = (
        query.get(name) for name in ("ssl_ca_certs", "ssl_ca_path", "ssl_ca_data")
    )
    if cafile or capath or cadata:
        try:
            context.load_verify_locations(cafile=cafile, capath=capath, cadata=cadata)
        except (OSError, ValueError) as exc:
            where = f"ssl_ca_certs={cafile!r}" if cafile else f"ssl_ca_path={capath!r}"
            if cadata and not (cafile or capath):
                where = "ssl_ca_data"
            raise ValueError(
                f"Cannot load the CA certificates of the Redis URL ({where}): {_reason(exc)}"
            ) from None
    if "ssl_min_version" in query:
        try:
            context.minimum_version = ssl.TLSVersion(int(query["ssl_min_version"]))
        except ValueError:
            raise ValueError(
                "Invalid value for 'ssl_min_version' in Redis URL: "
                f"{query['ssl_min_version']!r} (a TLSVersion number, e.g. 771 for TLS 1.2)"
            ) from None
    if "ssl_ciphers" in query:
        try:
            context.set_ciphers(query["ssl_ciphers"])
        except ssl.SSLError:
            raise ValueError(
                f"Invalid value for 'ssl_ciphers' in Redis URL: {query['ssl_ciphers']!r}"
            ) from None
    return context


def explain_tls_failure(exc: BaseException, where: str, host: str) -> str | None:
    """What to fix when a TLS connection to Redis failed (None: not a TLS failure).

    ``exc`` is the error the handshake raised or the one that closed the connection during
    login (a server that wants a client certificate says so after the handshake).
    """
    if isinstance(exc, ssl.SSLCertVerificationError):
        detail = exc.verify_message or exc.reason or str(exc)
        if exc.verify_code in _HOST_MISMATCH:
            return (
                f"TLS: the certificate of Redis at {where} is not valid for the host {host!r} "
                f"({detail}). Put the host name the certificate names in PARETO_REDIS_URL "
                "(the URL's host is what is checked)."
            )
        return (
            f"TLS: the certificate of Redis at {where} is not trusted ({detail}). "
            "Add ?ssl_ca_certs=/path/to/ca.pem to PARETO_REDIS_URL with the CA that signed "
            "the server's certificate (or install that CA in the system trust store)."
        )
    if isinstance(exc, ssl.SSLError):
        reason = exc.reason or ""
        if "CERTIFICATE_REQUIRED" in reason or "HANDSHAKE_FAILURE" in reason:
            return (
                f"TLS: Redis at {where} refused the connection without a client certificate "
                f"({reason}). Add ssl_certfile=/path/to/client.crt and "
                "ssl_keyfile=/path/to/client.key to PARETO_REDIS_URL."
            )
        if "BAD_CERTIFICATE" in reason or "UNKNOWN_CA" in reason:
            return (
                f"TLS: Redis at {where} rejected the client certificate ({reason}). Check "
                "ssl_certfile / ssl_keyfile in PARETO_REDIS_URL: the server must trust their CA."
            )
        if "WRONG_VERSION_NUMBER" in reason or "RECORD_LAYER_FAILURE" in reason:
            return (
                f"TLS: Redis at {where} did not answer in TLS ({reason}). Is this the "
                "server's TLS port? A plain-text port takes redis://, not rediss://."
            )
        return f"TLS: the handshake with Redis at {where} failed: {reason or exc}"
    return None


def _verify_flags(query: Mapping[str, str], name: str) -> list[ssl.VerifyFlags]:
    """redis-py's format: ``VERIFY_X509_STRICT,VERIFY_X509_PARTIAL_CHAIN`` (brackets allowed)."""
    text = query.get(name)
    if not text:
        return []
    flags = []
    for flag in text.replace("[", "").replace("]", "").split(","):
        flag = flag.strip()
        if not hasattr(ssl.VerifyFlags, flag):
            raise ValueError(f"Invalid ssl verify flag in {name!r} of Redis URL: {flag!r}")
        flags.append(getattr(ssl.VerifyFlags, flag))
    return flags


def _reason(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc)
