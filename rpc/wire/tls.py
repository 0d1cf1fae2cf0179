"""TLS to the broker (``amqps://``): the client's SSL context, and its failures put into words.

The broker's certificate and its host name are always verified; what varies is
whom to trust (a CA file, or the system's trust store) and whether the client
shows a certificate of its own (which may also be its identity: the EXTERNAL
mechanism, ``?auth_mechanism=external``).
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class TlsOptions:
    """Whom to trust and what to show; the defaults trust the system's store and show nothing."""

    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None  # None: the key is in cert_file


def client_context(options: TlsOptions) -> ssl.SSLContext:
    """A client context that verifies the broker; ValueError naming a file it cannot use."""
    if options.key_file is not None and options.cert_file is None:
        raise ValueError("a TLS key file needs its certificate file (AMQP_CERT_FILE)")
    try:
        # CERT_REQUIRED, check_hostname and TLS 1.2 at least: create_default_context's own.
        context = ssl.create_default_context(
            cafile=str(options.ca_file) if options.ca_file is not None else None
        )
    except (OSError, ssl.SSLError) as exc:
        raise ValueError(f"cannot read the TLS CA file {options.ca_file}: {exc}") from exc
    if options.cert_file is not None:
        try:
            context.load_cert_chain(options.cert_file, options.key_file)
        except (OSError, ssl.SSLError) as exc:
            raise ValueError(
                f"cannot load the TLS client certificate {options.cert_file}: {exc}"
            ) from exc
    return context


def describe(exc: ssl.SSLError) -> str:
    """What went wrong in a handshake, without OpenSSL's bracketed codes."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"certificate verify failed: {exc.verify_message}"
    return exc.reason.lower().replace("_", " ") if exc.reason else str(exc)
