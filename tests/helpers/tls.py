"""A sample cluster config with TLS everywhere: a test CA, a certificate per process."""

from __future__ import annotations

from pathlib import Path

import trustme

SAMPLE = Path(__file__).resolve().parents[2] / "examples" / "busan-120.toml"


def tls_sample_config(directory: Path) -> Path:
    """examples/busan-120.toml with `tls_ca` and a certificate for a, b and the witness, all
    issued by a fresh test CA for 127.0.0.1 (files in `directory`); the config's path."""
    authority = trustme.CA()
    authority.cert_pem.write_to_path(str(directory / "ca.pem"))
    for name in ("a", "b", "witness"):
        certificate = authority.issue_cert("127.0.0.1", "localhost")
        certificate.private_key_pem.write_to_path(str(directory / f"{name}.key"))
        certificate.cert_chain_pems[0].write_to_path(str(directory / f"{name}.pem"))
    source = SAMPLE.read_text().replace("failover_timeout = 0.8", f'failover_timeout = 0.8\ntls_ca = "{directory / "ca.pem"}"')
    for name, data_dir in (("a", "data/a"), ("b", "data/b"), ("witness", "data/w")):
        source = source.replace(
            f'data_dir = "{data_dir}"',
            f'data_dir = "{data_dir}"\ntls_cert = "{directory / (name + ".pem")}"\ntls_key = "{directory / (name + ".key")}"',
        )
    target = directory / "tls.toml"
    target.write_text(source)
    return target
