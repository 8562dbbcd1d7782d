//! TLS: the server certificate (loaded, or generated self-signed on first
//! start) and the rustls configurations for STARTTLS and direct TLS.

use crate::config::Config;
use anyhow::{bail, Context};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// ALPN protocol of XMPP client connections over direct TLS (XEP-0368).
const ALPN_XMPP_CLIENT: &[u8] = b"xmpp-client";

/// The two server configurations: for STARTTLS, and for direct TLS with ALPN.
#[derive(Clone)]
pub struct TlsContext {
    pub starttls: Arc<rustls::ServerConfig>,
    pub direct: Arc<rustls::ServerConfig>,
}

impl TlsContext {
    pub fn from_config(config: &Config) -> anyhow::Result<TlsContext> {
        let (cert_path, key_path) = match (&config.tls.cert, &config.tls.key) {
            (Some(c), Some(k)) => (c.clone(), k.clone()),
            _ => ensure_self_signed(&config.server.data_dir, &config.server.domain)?,
        };
        let certs = load_certs(&cert_path)?;
        let key = load_key(&key_path)?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let base = rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .context("TLS protocol versions")?
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .with_context(|| {
                format!(
                    "certificate {} and key {}",
                    cert_path.display(),
                    key_path.display()
                )
            })?;
        let mut direct = base.clone();
        direct.alpn_protocols = vec![ALPN_XMPP_CLIENT.to_vec()];
        Ok(TlsContext {
            starttls: Arc::new(base),
            direct: Arc::new(direct),
        })
    }
}

/// Paths of the generated certificate; made when missing.
fn ensure_self_signed(data_dir: &Path, domain: &str) -> anyhow::Result<(PathBuf, PathBuf)> {
    let dir = data_dir.join("tls");
    let cert_path = dir.join("cert.pem");
    let key_path = dir.join("key.pem");
    if cert_path.exists() && key_path.exists() {
        return Ok((cert_path, key_path));
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let names = vec![domain.to_string(), format!("*.{domain}")];
    let generated =
        rcgen::generate_simple_self_signed(names).context("generating a certificate")?;
    write_private(&key_path, generated.key_pair.serialize_pem().as_bytes())?;
    std::fs::write(&cert_path, generated.cert.pem())
        .with_context(|| format!("writing {}", cert_path.display()))?;
    tracing::warn!(
        cert = %cert_path.display(),
        "generated a self-signed certificate for {domain}; clients will not trust it until you configure [tls] cert and key"
    );
    Ok((cert_path, key_path))
}

/// Writes a file readable by its owner only.
fn write_private(path: &Path, data: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    #[cfg(unix)]
    use std::os::unix::fs::OpenOptionsExt;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    options.mode(0o600);
    let mut file = options
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    file.write_all(data)?;
    Ok(())
}

fn load_certs(path: &Path) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let data = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let certs = rustls_pemfile::certs(&mut data.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("parsing {}", path.display()))?;
    if certs.is_empty() {
        bail!("{} holds no PEM certificate", path.display());
    }
    Ok(certs)
}

fn load_key(path: &Path) -> anyhow::Result<PrivateKeyDer<'static>> {
    let data = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    rustls_pemfile::private_key(&mut data.as_slice())
        .with_context(|| format!("parsing {}", path.display()))?
        .with_context(|| format!("{} holds no PEM private key", path.display()))
}

/// The RFC 9266 tls-exporter channel binding of a server connection, for
/// SCRAM-*-PLUS. Only TLS 1.3 gives one (RFC 9266 section 3).
pub fn tls_exporter(conn: &rustls::ServerConnection) -> Option<Vec<u8>> {
    if conn.protocol_version() != Some(rustls::ProtocolVersion::TLSv1_3) {
        return None;
    }
    let mut out = vec![0u8; 32];
    conn.export_keying_material(&mut out, b"EXPORTER-Channel-Binding", None)
        .ok()?;
    Some(out)
}

impl TlsContext {
    /// Checks the configured certificate and key without generating one.
    pub fn from_config_check(config: &Config) -> anyhow::Result<()> {
        if let (Some(c), Some(k)) = (&config.tls.cert, &config.tls.key) {
            load_certs(c)?;
            load_key(k)?;
        }
        Ok(())
    }
}
