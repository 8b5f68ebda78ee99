//! Certificates made in the test (rcgen): a CA, a server certificate for localhost, client
//! certificates with a chosen identity, and clients that connect with them and a bearer token.

use std::net::SocketAddr;

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, SanType};
use subledger::proto::subscription_ledger_client::SubscriptionLedgerClient;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity, ServerTlsConfig};

use super::Client;

/// How a client certificate names its holder.
pub enum Holder<'a> {
    /// A DNS subject alternative name.
    Dns(&'a str),
    /// A URI subject alternative name.
    Uri(&'a str),
    /// No subject alternative name: the CN alone.
    CommonName(&'a str),
}

/// A PEM certificate and its key.
#[derive(Clone)]
pub struct Pem {
    pub cert: String,
    pub key: String,
}

pub struct Pki {
    pub ca_pem: String,
    ca: CertifiedIssuer<'static, KeyPair>,
    pub server: Pem,
}

impl Pki {
    pub fn new(ca_name: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, ca_name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        let server_key = KeyPair::generate().unwrap();
        let mut server =
            CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
        server
            .distinguished_name
            .push(DnType::CommonName, "localhost");
        let server = Pem {
            cert: server.signed_by(&server_key, &ca).unwrap().pem(),
            key: server_key.serialize_pem(),
        };
        Self {
            ca_pem: ca.pem(),
            ca,
            server,
        }
    }

    pub fn client(&self, name: Holder<'_>) -> Pem {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        let cn = match name {
            Holder::Dns(dns) => {
                params
                    .subject_alt_names
                    .push(SanType::DnsName(dns.try_into().unwrap()));
                "client"
            }
            Holder::Uri(uri) => {
                params
                    .subject_alt_names
                    .push(SanType::URI(uri.try_into().unwrap()));
                "client"
            }
            Holder::CommonName(cn) => cn,
        };
        params.distinguished_name.push(DnType::CommonName, cn);
        Pem {
            cert: params.signed_by(&key, &self.ca).unwrap().pem(),
            key: key.serialize_pem(),
        }
    }

    /// TLS for a server; with `mutual`, clients need a certificate from this CA.
    pub fn server_tls(&self, mutual: bool) -> ServerTlsConfig {
        let tls = ServerTlsConfig::new()
            .identity(Identity::from_pem(&self.server.cert, &self.server.key));
        if mutual {
            tls.client_ca_root(Certificate::from_pem(&self.ca_pem))
        } else {
            tls
        }
    }
}

/// A client over TLS (trusting `ca_pem`), with a client certificate when given one.
pub async fn connect(
    address: SocketAddr,
    ca_pem: &str,
    identity: Option<&Pem>,
) -> Result<Client, tonic::transport::Error> {
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca_pem))
        .domain_name("localhost");
    if let Some(identity) = identity {
        tls = tls.identity(Identity::from_pem(&identity.cert, &identity.key));
    }
    let channel = Endpoint::from_shared(format!("https://{address}"))
        .unwrap()
        .tls_config(tls)?
        .connect()
        .await?;
    Ok(SubscriptionLedgerClient::new(channel))
}

/// A request carrying `authorization: Bearer <token>` when given a token.
pub fn with_token<T>(message: T, token: Option<&str>) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    if let Some(token) = token {
        request
            .metadata_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
    }
    request
}

/// A server over mutual TLS whose auth file names one operator principal by its token, with the
/// files a command-line client needs written to `dir`: ca.pem, client.pem and client.key (a
/// certificate that names no principal, so the token decides).
pub struct SecuredServer {
    pub server: super::TestServer,
    pub token: String,
    pub dir: tempfile::TempDir,
}

impl SecuredServer {
    pub async fn start(db: &super::TestDb, principal: &str) -> Self {
        use std::sync::Arc;

        use subledger::api::auth::{Authenticator, new_token};
        use subledger::server::ServerConfig;

        let dir = tempfile::tempdir().unwrap();
        let pki = Pki::new("test CA");
        let client = pki.client(Holder::Dns("client-host"));
        let (token, digest) = new_token().unwrap();
        let auth = format!(
            "[[principal]]\nname = {principal:?}\nroles = [\"operator\"]\ntoken_sha256 = \"{digest}\"\n"
        );
        for (name, text) in [
            ("ca.pem", &pki.ca_pem),
            ("client.pem", &client.cert),
            ("client.key", &client.key),
            ("auth.toml", &auth),
        ] {
            std::fs::write(dir.path().join(name), text).unwrap();
        }
        let authenticator = Authenticator::from_file(&dir.path().join("auth.toml"), false).unwrap();
        let server = db
            .start_server_with(ServerConfig {
                tls: Some(pki.server_tls(true)),
                authenticator: Arc::new(authenticator),
                ..ServerConfig::default()
            })
            .await;
        Self { server, token, dir }
    }

    /// The path of one of the client's files, as a command line takes it.
    pub fn path(&self, name: &str) -> String {
        self.dir.path().join(name).to_str().unwrap().to_owned()
    }
}
