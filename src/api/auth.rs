//! Who may call what. The auth file names principals and their roles; every call is identified
//! (a bearer token, a client certificate, or both) and checked against the role its RPC needs,
//! in a tower layer in front of the service, before a handler runs. The handler learns who
//! called from the [`Caller`] the layer puts in the request's extensions, and records it as
//! the actor of what it appends.
//!
//! The file holds only SHA-256 digests of tokens, compared in constant time. It is re-read on
//! SIGHUP; a file that does not load keeps the previous principals in force.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http::{HeaderMap, Request, Response};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tonic::body::Body;
use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};
use tower::{Layer, Service};

use super::error::ApiError;
// The actor's form is a rule of the ledger: the verifier holds stored entries to it too.
pub use crate::ledger::fields::is_actor_name;
pub use crate::ledger::limits::PRINCIPAL_NAME_CHARS_MAX;

/// What a principal may do. Each role includes the ones before it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Every read-only RPC.
    Reader,
    /// A reader that may also subscribe and cancel.
    Subscriber,
    /// Every RPC, the offering lifecycle included.
    Operator,
}

impl Role {
    pub fn name(self) -> &'static str {
        match self {
            Self::Reader => "reader",
            Self::Subscriber => "subscriber",
            Self::Operator => "operator",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        [Self::Reader, Self::Subscriber, Self::Operator]
            .into_iter()
            .find(|role| role.name() == name)
    }
}

/// The role each RPC of subledger.v1.SubscriptionLedger needs: the one table the layer consults.
/// An RPC missing here is refused to everyone, and `every_rpc_has_a_role` fails, so a new RPC
/// cannot be served without a decision about who may call it.
pub const RPC_ROLES: &[(&str, Role)] = &[
    ("CreateOffering", Role::Operator),
    ("GetOffering", Role::Reader),
    ("ListOfferings", Role::Reader),
    ("CloseOffering", Role::Operator),
    ("FinalizeOffering", Role::Operator),
    ("Subscribe", Role::Subscriber),
    ("Cancel", Role::Subscriber),
    ("GetPosition", Role::Reader),
    ("ListHistory", Role::Reader),
    ("WatchHistory", Role::Reader),
    ("VerifyOffering", Role::Reader),
    ("GetDigest", Role::Reader),
    ("AllocateOffering", Role::Operator),
    ("AmendOffering", Role::Operator),
    ("GetInclusionProof", Role::Reader),
    ("GetConsistencyProof", Role::Reader),
];

/// Services any caller may use without a credential: load balancers probe health, and grpcurl
/// needs reflection before it can send a credential at all.
const OPEN_SERVICES: &[&str] = &[
    "grpc.health.v1.Health",
    "grpc.reflection.v1.ServerReflection",
    "grpc.reflection.v1alpha.ServerReflection",
];

/// The actor recorded when authentication is off.
pub const ANONYMOUS: &str = "anonymous";
/// Names that mean something else in the history, so no principal may take them.
const RESERVED_NAMES: &[&str] = &[
    ANONYMOUS,
    crate::ledger::UNKNOWN_ACTOR,
    crate::ledger::SYSTEM_ACTOR,
];

/// Who made a call, as the auth layer established it.
#[derive(Clone, Debug)]
pub struct Caller {
    pub principal: Arc<str>,
}

/// The principal the auth layer identified for this call. The layer is part of every server
/// (with authentication off it names every caller [`ANONYMOUS`]), so a call without one is
/// only possible in a server assembled without it.
pub fn actor<T>(request: &tonic::Request<T>) -> Arc<str> {
    match request.extensions().get::<Caller>() {
        Some(caller) => caller.principal.clone(),
        None => {
            debug_assert!(
                false,
                "a call reached the service without passing the auth layer"
            );
            ANONYMOUS.into()
        }
    }
}

/// How logs and metrics name a call of a method no service has.
pub const UNKNOWN_METHOD: &str = "unknown";
/// The methods of the services open to every caller, as logs and metrics name them.
const OPEN_METHODS: &[&str] = &[
    "grpc.health.v1.Health/Check",
    "grpc.health.v1.Health/Watch",
    "grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
    "grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
];

/// The service a request's path names (`/package.Service/Method`), or "" for a path of
/// another form.
pub fn service_name(path: &str) -> &str {
    path.strip_prefix('/')
        .and_then(|p| p.split_once('/'))
        .map_or("", |(service, _)| service)
}

/// The name logs and metrics give a call: the RPC's name for the ledger's own RPCs,
/// service/method for health and reflection, and [`UNKNOWN_METHOD`] for any other path, so
/// that no path a caller invents becomes a metric series.
pub fn method_name(path: &str) -> &'static str {
    let path = path.strip_prefix('/').unwrap_or(path);
    if let Some(rpc) = path
        .strip_prefix(crate::proto::SERVICE_NAME)
        .and_then(|p| p.strip_prefix('/'))
    {
        return RPC_ROLES
            .iter()
            .find(|(name, _)| *name == rpc)
            .map_or(UNKNOWN_METHOD, |(name, _)| name);
    }
    OPEN_METHODS
        .iter()
        .find(|known| **known == path)
        .copied()
        .unwrap_or(UNKNOWN_METHOD)
}

/// The role an RPC needs; None when the table has no row for it.
pub fn required_role(method: &str) -> Option<Role> {
    RPC_ROLES
        .iter()
        .find(|(name, _)| *name == method)
        .map(|(_, role)| *role)
}

#[derive(Debug, thiserror::Error)]
pub enum AuthFileError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
    /// A file that names nobody would lock every caller out: refused unless asked for.
    #[error(
        "{path} names no principal, which would refuse every call; add principals, or pass --allow-empty-auth"
    )]
    Empty { path: PathBuf },
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct AuthFile {
    #[serde(default, rename = "principal")]
    principals: Vec<PrincipalEntry>,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct PrincipalEntry {
    name: String,
    roles: Vec<Role>,
    token_sha256: Option<String>,
}

/// The principals of one version of the auth file.
#[derive(Debug, Default)]
pub struct Principals {
    /// Each principal's highest role, by name (client certificates are matched by name).
    roles: HashMap<Arc<str>, Role>,
    /// SHA-256 of each bearer token, with its principal.
    tokens: Vec<([u8; 32], Arc<str>)>,
}

impl Principals {
    pub fn load(path: &Path) -> Result<Self, AuthFileError> {
        let text = std::fs::read_to_string(path).map_err(|source| AuthFileError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text).map_err(|message| AuthFileError::Invalid {
            path: path.to_owned(),
            message,
        })
    }

    pub fn parse(text: &str) -> Result<Self, String> {
        // One line, for the log and for a start-up error: toml's own Display draws the source.
        let file: AuthFile = toml::from_str(text).map_err(|error| {
            let line = error
                .span()
                .map_or(0, |span| text[..span.start].matches('\n').count() + 1);
            format!("line {line}: {}", error.message().trim())
        })?;
        let mut principals = Self::default();
        let mut digests = HashSet::new();
        for entry in file.principals {
            check_principal_name(&entry.name)?;
            let name: Arc<str> = entry.name.as_str().into();
            let Some(role) = entry.roles.iter().copied().max() else {
                return Err(format!("principal {:?} has no roles", entry.name));
            };
            if principals.roles.insert(name.clone(), role).is_some() {
                return Err(format!("principal {:?} is named twice", entry.name));
            }
            if let Some(hex) = &entry.token_sha256 {
                let digest = crate::ledger::chain::parse_hex(hex).ok_or_else(|| {
                    format!(
                        "principal {:?}: token_sha256 must be 64 hex digits",
                        entry.name
                    )
                })?;
                if !digests.insert(digest) {
                    return Err(format!(
                        "principal {:?}: token_sha256 is another principal's too",
                        entry.name
                    ));
                }
                principals.tokens.push((digest, name));
            }
        }
        Ok(principals)
    }

    pub fn len(&self) -> usize {
        self.roles.len()
    }

    pub fn is_empty(&self) -> bool {
        self.roles.is_empty()
    }

    /// The principal whose token this is. Every stored digest is compared, each in constant
    /// time, so the time taken says nothing about which digest (or how much of one) matched.
    fn by_token(&self, token: &str) -> Option<&Arc<str>> {
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let mut found = None;
        for (stored, name) in &self.tokens {
            if bool::from(stored.ct_eq(&digest)) {
                found = Some(name);
            }
        }
        found
    }
}

/// Principal names have the form of [`is_actor_name`] and are not a reserved name.
pub fn check_principal_name(name: &str) -> Result<(), String> {
    if !is_actor_name(name) {
        return Err(format!(
            "principal name {name:?} must be 1-{PRINCIPAL_NAME_CHARS_MAX} characters of A-Z a-z 0-9 . _ : - / @"
        ));
    }
    if RESERVED_NAMES.contains(&name) {
        return Err(format!("principal name {name:?} is reserved"));
    }
    Ok(())
}

/// A fresh bearer token (256 random bits, URL-safe base64) and the hex SHA-256 that the auth
/// file holds instead of it.
pub fn new_token() -> Result<(String, String), getrandom::Error> {
    let mut secret = [0u8; 32];
    getrandom::fill(&mut secret)?;
    let token = URL_SAFE_NO_PAD.encode(secret);
    let digest = Sha256::digest(token.as_bytes());
    let hex = digest.iter().map(|b| format!("{b:02x}")).collect();
    Ok((token, hex))
}

/// The principals in force, or none at all when authentication is off.
pub struct Authenticator {
    /// None: authentication is off and every caller is [`ANONYMOUS`], with every role.
    file: Option<PathBuf>,
    /// Whether a file with no principal is taken (--allow-empty-auth).
    allow_empty: bool,
    principals: RwLock<Arc<Principals>>,
}

impl Authenticator {
    pub fn disabled() -> Self {
        Self {
            file: None,
            allow_empty: false,
            principals: RwLock::default(),
        }
    }

    /// The principals of the file at `path`; one that names nobody is refused unless
    /// `allow_empty`.
    pub fn from_file(path: &Path, allow_empty: bool) -> Result<Self, AuthFileError> {
        let authenticator = Self {
            file: Some(path.to_owned()),
            allow_empty,
            principals: RwLock::default(),
        };
        authenticator.reload()?;
        Ok(authenticator)
    }

    pub fn is_enabled(&self) -> bool {
        self.file.is_some()
    }

    /// Re-reads the auth file. On failure (a file that names nobody included, unless
    /// allowed) the principals in force stay in force.
    pub fn reload(&self) -> Result<usize, AuthFileError> {
        let Some(path) = &self.file else {
            return Ok(0);
        };
        let principals = Principals::load(path)?;
        let count = principals.len();
        if count == 0 && !self.allow_empty {
            return Err(AuthFileError::Empty {
                path: path.to_owned(),
            });
        }
        *self
            .principals
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Arc::new(principals);
        Ok(count)
    }

    fn current(&self) -> Arc<Principals> {
        self.principals
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// Identifies the caller of `method` and checks its role.
    fn authorize(&self, method: &str, credentials: &Credentials<'_>) -> Result<Caller, Refusal> {
        if !self.is_enabled() {
            return Ok(Caller {
                principal: ANONYMOUS.into(),
            });
        }
        let principals = self.current();
        let by_token = match credentials.bearer_token()? {
            Some(token) => Some(
                principals
                    .by_token(token)
                    .ok_or(Refusal::unauthenticated("the bearer token is not known"))?,
            ),
            None => None,
        };
        // A certificate identifies a principal only if one has its name: it may also just be
        // what a token-carrying client connects with.
        let certified = credentials.certificate_identity();
        let by_certificate = certified
            .as_deref()
            .and_then(|identity| principals.roles.get_key_value(identity))
            .map(|(name, _)| name);
        let principal = match (by_token, by_certificate) {
            (Some(token), Some(certificate)) if token != certificate => {
                return Err(Refusal::unauthenticated(format!(
                    "the bearer token names principal {token:?} but the client certificate names {certificate:?}"
                )));
            }
            (Some(principal), _) | (None, Some(principal)) => principal.clone(),
            (None, None) => {
                return Err(Refusal::unauthenticated(match certified {
                    Some(identity) => format!(
                        "the client certificate's identity {identity:?} is not a principal, and no bearer token was sent"
                    ),
                    None => "no credential: send \"authorization: Bearer <token>\" or a client certificate".to_owned(),
                }));
            }
        };
        let role = principals.roles[&principal];
        match required_role(method) {
            Some(required) if role >= required => Ok(Caller { principal }),
            required => Err(Refusal::PermissionDenied {
                principal,
                method: method.to_owned(),
                required_role: required.map_or("none (this RPC has no role)", Role::name),
            }),
        }
    }
}

/// What a call presents to identify itself.
struct Credentials<'a> {
    headers: &'a HeaderMap,
    peer_certificate: Option<&'a [u8]>,
}

impl Credentials<'_> {
    fn bearer_token(&self) -> Result<Option<&str>, Refusal> {
        let mut values = self.headers.get_all(http::header::AUTHORIZATION).iter();
        let Some(value) = values.next() else {
            return Ok(None);
        };
        if values.next().is_some() {
            return Err(Refusal::unauthenticated(
                "more than one authorization header",
            ));
        }
        // The token itself never goes into a message: only what is wrong with its form.
        let token = value
            .to_str()
            .ok()
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or(Refusal::unauthenticated(
                "the authorization header is not \"Bearer <token>\"",
            ))?;
        Ok(Some(token))
    }

    /// The client certificate's first URI or DNS subject alternative name, or its CN if it has
    /// none. None without a certificate (or with one that does not parse, which the TLS
    /// handshake would not have accepted).
    fn certificate_identity(&self) -> Option<String> {
        use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};
        let (_, certificate) = X509Certificate::from_der(self.peer_certificate?).ok()?;
        if let Ok(Some(names)) = certificate.subject_alternative_name() {
            let first = names
                .value
                .general_names
                .iter()
                .find_map(|name| match name {
                    GeneralName::URI(uri) => Some(*uri),
                    GeneralName::DNSName(dns) => Some(*dns),
                    _ => None,
                });
            if let Some(name) = first {
                return Some(name.to_owned());
            }
        }
        certificate
            .subject()
            .iter_common_name()
            .next()
            .and_then(|cn| cn.as_str().ok())
            .map(str::to_owned)
    }
}

/// Why the layer refused a call.
#[derive(Debug)]
enum Refusal {
    Unauthenticated(String),
    PermissionDenied {
        principal: Arc<str>,
        method: String,
        required_role: &'static str,
    },
}

impl Refusal {
    fn unauthenticated(why: impl Into<String>) -> Self {
        Self::Unauthenticated(why.into())
    }
}

impl From<Refusal> for ApiError {
    fn from(refusal: Refusal) -> Self {
        match refusal {
            Refusal::Unauthenticated(why) => ApiError::Unauthenticated(why),
            Refusal::PermissionDenied {
                principal,
                method,
                required_role,
            } => ApiError::PermissionDenied {
                principal: principal.to_string(),
                method,
                required_role,
            },
        }
    }
}

/// The tower layer that authenticates and authorizes every call before tonic routes it.
#[derive(Clone)]
pub struct AuthLayer {
    authenticator: Arc<Authenticator>,
}

impl AuthLayer {
    pub fn new(authenticator: Arc<Authenticator>) -> Self {
        Self { authenticator }
    }
}

impl<S> Layer<S> for AuthLayer {
    type Service = AuthService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        AuthService {
            inner,
            authenticator: self.authenticator.clone(),
        }
    }
}

#[derive(Clone)]
pub struct AuthService<S> {
    inner: S,
    authenticator: Arc<Authenticator>,
}

impl<S, B> Service<Request<B>> for AuthService<S>
where
    S: Service<Request<B>, Response = Response<Body>>,
    S::Future: Send + 'static,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = futures::future::Either<
        S::Future,
        futures::future::Ready<Result<Response<Body>, S::Error>>,
    >;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        use futures::future::Either;
        let path = request.uri().path();
        if OPEN_SERVICES.contains(&service_name(path)) {
            return Either::Left(self.inner.call(request));
        }
        let method = method_name(path);
        let (peer_address, peer_certificate) = connection_of(&request);
        let credentials = Credentials {
            headers: request.headers(),
            peer_certificate: peer_certificate.as_deref(),
        };
        match self.authenticator.authorize(method, &credentials) {
            Ok(caller) => {
                request.extensions_mut().insert(caller);
                Either::Left(self.inner.call(request))
            }
            Err(refusal) => {
                let principal = match &refusal {
                    Refusal::PermissionDenied { principal, .. } => Some(principal.to_string()),
                    Refusal::Unauthenticated(_) => None,
                };
                let status = tonic::Status::from(ApiError::from(refusal));
                crate::telemetry::metrics::record_refusal(method, status.code());
                tracing::info!(
                    method,
                    principal,
                    peer = peer_address.map(|a| a.to_string()),
                    code = ?status.code(),
                    message = status.message(),
                    "call refused"
                );
                Either::Right(futures::future::ready(Ok(status.into_http())))
            }
        }
    }
}

/// The peer's address and, over mutual TLS, the DER of its certificate.
fn connection_of<B>(request: &Request<B>) -> (Option<SocketAddr>, Option<Vec<u8>>) {
    let extensions = request.extensions();
    if let Some(tls) = extensions.get::<TlsConnectInfo<TcpConnectInfo>>() {
        let certificate = tls
            .peer_certs()
            .and_then(|chain| chain.first().map(|leaf| leaf.as_ref().to_vec()));
        return (tls.get_ref().remote_addr(), certificate);
    }
    let address = extensions
        .get::<TcpConnectInfo>()
        .and_then(TcpConnectInfo::remote_addr);
    (address, None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto;

    /// The table and the service must list the same RPCs: the descriptor is what tonic serves.
    #[test]
    fn every_rpc_has_a_role() {
        use prost::Message;
        let descriptors = prost_types::FileDescriptorSet::decode(proto::FILE_DESCRIPTOR_SET)
            .expect("descriptors");
        let service = descriptors
            .file
            .iter()
            .flat_map(|f| f.service.iter())
            .find(|s| s.name() == "SubscriptionLedger")
            .expect("the ledger service");
        let mut served: Vec<&str> = service.method.iter().map(|m| m.name()).collect();
        let mut tabled: Vec<&str> = RPC_ROLES.iter().map(|(name, _)| *name).collect();
        served.sort_unstable();
        tabled.sort_unstable();
        assert_eq!(
            served, tabled,
            "every RPC needs exactly one row in RPC_ROLES"
        );
    }

    #[test]
    fn the_file_holds_digests_and_refuses_what_it_cannot_trust() {
        let (token, digest) = new_token().unwrap();
        assert_eq!(token.len(), 43, "256 bits in URL-safe base64");
        let text = format!(
            "[[principal]]\nname = \"checkout\"\nroles = [\"reader\", \"subscriber\"]\ntoken_sha256 = \"{digest}\"\n"
        );
        let principals = Principals::parse(&text).unwrap();
        assert_eq!(principals.by_token(&token).map(|p| &**p), Some("checkout"));
        assert_eq!(principals.roles["checkout"], Role::Subscriber);
        assert!(principals.by_token("guess").is_none());

        let twice = format!("{text}{text}");
        assert!(Principals::parse(&twice).unwrap_err().contains("twice"));
        assert!(
            Principals::parse("[[principal]]\nname = \"anonymous\"\nroles = [\"reader\"]").is_err()
        );
        assert!(Principals::parse("[[principal]]\nname = \"x\"\nroles = []").is_err());
        assert!(Principals::parse("[[principal]]\nname = \"x\"\nroles = [\"admin\"]").is_err());
        assert!(
            Principals::parse(
                "[[principal]]\nname = \"x\"\nroles = [\"reader\"]\ntoken_sha256 = \"abc\""
            )
            .is_err()
        );
        assert!(Principals::parse("[[principal]]\nname = \"x y\"\nroles = [\"reader\"]").is_err());
    }

    /// An empty file would lock every caller out: refused at start-up and on reload (the
    /// principals in force stay), unless allowed.
    #[test]
    fn a_file_that_names_nobody_is_refused_unless_allowed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("auth.toml");
        std::fs::write(&path, "").unwrap();
        assert!(matches!(
            Authenticator::from_file(&path, false),
            Err(AuthFileError::Empty { .. })
        ));
        assert_eq!(
            Authenticator::from_file(&path, true)
                .unwrap()
                .reload()
                .unwrap(),
            0
        );

        std::fs::write(
            &path,
            "[[principal]]\nname = \"ops\"\nroles = [\"operator\"]\n",
        )
        .unwrap();
        let authenticator = Authenticator::from_file(&path, false).unwrap();
        std::fs::write(&path, "# everyone removed\n").unwrap();
        let refused = authenticator.reload().unwrap_err().to_string();
        assert!(refused.contains("--allow-empty-auth"), "{refused}");
        assert_eq!(
            authenticator.current().len(),
            1,
            "the principals in force stay"
        );
    }
}
