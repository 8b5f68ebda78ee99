//! Who may call what, over real mutual TLS, on both backends: every RPC against every role, by
//! token and by certificate; the actor recorded through three replicas; replays by another
//! principal refused.

mod common;

use std::sync::Arc;

use common::tls::{self, Holder, Pem, Pki, with_token};
use common::{Client, TestDb, TestServer, assert_status, offering, subscribe};
use subledger::api::auth::{Authenticator, RPC_ROLES, Role, new_token};
use subledger::proto;
use subledger::server::ServerConfig;
use tonic::{Code, Status};
use tonic_types::StatusExt;

/// One principal of the test's auth file, with its token and its client certificate.
struct Principal {
    name: &'static str,
    role: Role,
    token: String,
    certificate: Pem,
}

struct Setup {
    pki: Pki,
    principals: Vec<Principal>,
    /// A certificate from the CA whose identity is no principal: it connects, and identifies
    /// nobody.
    stranger: Pem,
    _dir: tempfile::TempDir,
    auth_file: std::path::PathBuf,
}

impl Setup {
    fn new() -> Self {
        let pki = Pki::new("subledger test CA");
        let mut principals = Vec::new();
        // Each principal's certificate names it another way: DNS SAN, CN alone, URI SAN.
        for (name, role) in [
            ("reader", Role::Reader),
            ("subscriber", Role::Subscriber),
            ("operator", Role::Operator),
            ("spiffe://subledger.test/auditor", Role::Reader),
        ] {
            let certificate = match name {
                "reader" => pki.client(Holder::Dns(name)),
                "subscriber" => pki.client(Holder::CommonName(name)),
                _ => pki.client(Holder::Uri(name)),
            };
            principals.push(Principal {
                name,
                role,
                token: new_token().unwrap().0,
                certificate,
            });
        }
        let stranger = pki.client(Holder::Dns("stranger.example"));
        let dir = tempfile::tempdir().unwrap();
        let auth_file = dir.path().join("auth.toml");
        let setup = Self {
            pki,
            principals,
            stranger,
            _dir: dir,
            auth_file,
        };
        std::fs::write(&setup.auth_file, setup.auth_toml()).unwrap();
        setup
    }

    fn auth_toml(&self) -> String {
        use sha2::Digest as _;
        self.principals
            .iter()
            .map(|p| {
                let digest = sha2::Sha256::digest(p.token.as_bytes());
                let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
                format!(
                    "[[principal]]\nname = {:?}\nroles = [{:?}]\ntoken_sha256 = \"{hex}\"\n",
                    p.name,
                    p.role.name()
                )
            })
            .collect()
    }

    fn principal(&self, name: &str) -> &Principal {
        self.principals.iter().find(|p| p.name == name).unwrap()
    }

    fn config(&self) -> ServerConfig {
        ServerConfig {
            tls: Some(self.pki.server_tls(true)),
            authenticator: Arc::new(Authenticator::from_file(&self.auth_file, false).unwrap()),
            ..ServerConfig::default()
        }
    }

    async fn start(&self, db: &TestDb) -> TestServer {
        db.start_server_with(self.config()).await
    }

    async fn client(&self, server: &TestServer, certificate: &Pem) -> Client {
        tls::connect(server.address, &self.pki.ca_pem, Some(certificate))
            .await
            .expect("mutual TLS connection")
    }
}

/// Offerings the matrix acts on, made by the operator.
async fn fixtures(setup: &Setup, server: &TestServer) {
    let operator = setup.principal("operator");
    let mut client = setup.client(server, &operator.certificate).await;
    for id in ["deal", "done"] {
        client
            .create_offering(offering(id, 1_000_000, 0))
            .await
            .unwrap();
    }
    let status = |request_id: &str| proto::CloseOfferingRequest {
        offering_id: "done".into(),
        request_id: request_id.into(),
        ..Default::default()
    };
    client.close_offering(status("close-done")).await.unwrap();
    client
        .finalize_offering(proto::FinalizeOfferingRequest {
            offering_id: "done".into(),
            request_id: "finalize-done".into(),
            ..Default::default()
        })
        .await
        .unwrap();
}

/// Calls `rpc` once, with a request that passes validation; what matters is whether the auth
/// layer let it through. Lifecycle RPCs aim at an offering that does not exist, so that an
/// allowed call answers NOT_FOUND and changes nothing.
async fn call(client: &mut Client, rpc: &str, token: Option<&str>, n: usize) -> Result<(), Status> {
    macro_rules! r {
        ($message:expr) => {
            with_token($message, token)
        };
    }
    let unique = format!("{rpc}-{n}");
    match rpc {
        "CreateOffering" => client
            .create_offering(r!(offering(&unique, 10, 0)))
            .await
            .map(drop),
        "GetOffering" => client
            .get_offering(r!(proto::GetOfferingRequest {
                offering_id: "deal".into()
            }))
            .await
            .map(drop),
        "ListOfferings" => client
            .list_offerings(r!(proto::ListOfferingsRequest::default()))
            .await
            .map(drop),
        "CloseOffering" => client
            .close_offering(r!(proto::CloseOfferingRequest {
                offering_id: "nope".into(),
                ..Default::default()
            }))
            .await
            .map(drop),
        "FinalizeOffering" => client
            .finalize_offering(r!(proto::FinalizeOfferingRequest {
                offering_id: "nope".into(),
                ..Default::default()
            }))
            .await
            .map(drop),
        "Subscribe" => client
            .subscribe(r!(subscribe("deal", "alice", 1, &unique)))
            .await
            .map(drop),
        "Cancel" => client
            .cancel(r!(common::cancel("deal", "nobody", 1, &unique)))
            .await
            .map(drop),
        "GetPosition" => client
            .get_position(r!(proto::GetPositionRequest {
                offering_id: "deal".into(),
                investor_id: "alice".into(),
            }))
            .await
            .map(drop),
        "ListHistory" => client
            .list_history(r!(proto::ListHistoryRequest {
                offering_id: "deal".into(),
                ..Default::default()
            }))
            .await
            .map(drop),
        "WatchHistory" => client
            .watch_history(r!(proto::WatchHistoryRequest {
                offering_id: "done".into(),
                after_sequence: 4,
            }))
            .await
            .map(drop),
        "VerifyOffering" => client
            .verify_offering(r!(proto::VerifyOfferingRequest {
                offering_id: "deal".into(),
                digest: None,
            }))
            .await
            .map(drop),
        "GetDigest" => client
            .get_digest(r!(proto::GetDigestRequest {
                offering_id: "deal".into()
            }))
            .await
            .map(drop),
        "AllocateOffering" => client
            .allocate_offering(r!(proto::AllocateOfferingRequest {
                offering_id: "nope".into(),
                ..Default::default()
            }))
            .await
            .map(drop),
        "AmendOffering" => client
            .amend_offering(r!(proto::AmendOfferingRequest {
                offering_id: "nope".into(),
                name: Some("Renamed".into()),
                ..Default::default()
            }))
            .await
            .map(drop),
        "GetInclusionProof" => client
            .get_inclusion_proof(r!(proto::GetInclusionProofRequest {
                offering_id: "deal".into(),
                sequence: 1,
                tree_size: 1,
            }))
            .await
            .map(drop),
        "GetConsistencyProof" => client
            .get_consistency_proof(r!(proto::GetConsistencyProofRequest {
                offering_id: "deal".into(),
                from_size: 1,
                to_size: 1,
            }))
            .await
            .map(drop),
        other => {
            panic!("the role matrix has no call for {other}: add one (and a row in RPC_ROLES)")
        }
    }
}

/// Every RPC (from the table the server itself consults) by every role, by token and by
/// client certificate, and by a caller that identifies nobody.
async fn every_rpc_by_every_role_by_token_and_by_certificate(db: TestDb) {
    let setup = Setup::new();
    let server = setup.start(&db).await;
    fixtures(&setup, &server).await;
    let mut stranger = setup.client(&server, &setup.stranger).await;
    let mut cells = 0;
    for (rpc, required) in RPC_ROLES {
        // Nobody: a certificate that names no principal, and no token.
        let refused = call(&mut stranger, rpc, None, cells).await;
        assert_status(refused, Code::Unauthenticated, "UNAUTHENTICATED");
        cells += 1;
        for principal in setup.principals.iter().take(3) {
            let mut by_certificate = setup.client(&server, &principal.certificate).await;
            let results = [
                call(&mut by_certificate, rpc, None, cells).await,
                call(&mut stranger, rpc, Some(&principal.token), cells + 1).await,
            ];
            cells += 2;
            for (how, result) in ["certificate", "token"].iter().zip(results) {
                if principal.role >= *required {
                    if let Err(status) = &result {
                        assert!(
                            !matches!(
                                status.code(),
                                Code::Unauthenticated | Code::PermissionDenied
                            ),
                            "{} by {how} should be allowed {rpc}: {status:?}",
                            principal.name
                        );
                    }
                } else {
                    let status = assert_status(result, Code::PermissionDenied, "PERMISSION_DENIED");
                    let details = status.get_error_details();
                    let metadata = &details.error_info().unwrap().metadata;
                    assert_eq!(metadata["principal"], principal.name, "{rpc} by {how}");
                    assert_eq!(metadata["method"], *rpc);
                    assert_eq!(metadata["required_role"], required.name());
                }
            }
        }
    }
    assert_eq!(
        cells,
        RPC_ROLES.len() * 7,
        "every RPC x (nobody + 3 roles x 2 credentials)"
    );
}

async fn token_and_certificate_must_agree(db: TestDb) {
    let setup = Setup::new();
    let server = setup.start(&db).await;
    fixtures(&setup, &server).await;
    let reader = setup.principal("reader");
    let operator = setup.principal("operator");
    let mut client = setup.client(&server, &reader.certificate).await;
    let get = || proto::GetOfferingRequest {
        offering_id: "deal".into(),
    };
    // The same principal both ways: fine.
    client
        .get_offering(with_token(get(), Some(&reader.token)))
        .await
        .unwrap();
    // Two principals: refused, even though both could read.
    let status = assert_status(
        client
            .get_offering(with_token(get(), Some(&operator.token)))
            .await,
        Code::Unauthenticated,
        "UNAUTHENTICATED",
    );
    assert!(status.message().contains("operator") && status.message().contains("reader"));
    // A token that is no one's, or no bearer token at all, is refused and never echoed.
    for header in ["Bearer not-a-token", "Basic cmVhZGVy", "Bearer "] {
        let mut request = tonic::Request::new(get());
        request
            .metadata_mut()
            .insert("authorization", header.parse().unwrap());
        let status = assert_status(
            client.get_offering(request).await,
            Code::Unauthenticated,
            "UNAUTHENTICATED",
        );
        assert!(
            !status.message().contains("not-a-token") && !status.message().contains("cmVhZGVy")
        );
    }
    // A URI subject alternative name identifies its principal.
    let auditor = setup.principal("spiffe://subledger.test/auditor");
    let mut auditor_client = setup.client(&server, &auditor.certificate).await;
    auditor_client.get_offering(get()).await.unwrap();
    assert_status(
        auditor_client
            .subscribe(subscribe("deal", "a", 1, "auditor-1"))
            .await,
        Code::PermissionDenied,
        "PERMISSION_DENIED",
    );
    // Health and reflection need no principal.
    let channel = tonic::transport::Endpoint::from_shared(format!("https://{}", server.address))
        .unwrap()
        .tls_config(
            tonic::transport::ClientTlsConfig::new()
                .ca_certificate(tonic::transport::Certificate::from_pem(&setup.pki.ca_pem))
                .identity(tonic::transport::Identity::from_pem(
                    &setup.stranger.cert,
                    &setup.stranger.key,
                ))
                .domain_name("localhost"),
        )
        .unwrap()
        .connect()
        .await
        .unwrap();
    let health = tonic_health::pb::health_client::HealthClient::new(channel)
        .check(tonic_health::pb::HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap();
    assert_eq!(health.into_inner().status, 1, "SERVING");
}

async fn a_certificate_from_another_ca_fails_the_handshake(db: TestDb) {
    let setup = Setup::new();
    let server = setup.start(&db).await;
    let other = Pki::new("another CA");
    let outsider = other.client(Holder::Dns("operator"));
    // TLS 1.3 may report the refusal at the first call rather than at connect.
    let refused = match tls::connect(server.address, &setup.pki.ca_pem, Some(&outsider)).await {
        Err(_) => true,
        Ok(mut client) => client
            .get_offering(proto::GetOfferingRequest {
                offering_id: "deal".into(),
            })
            .await
            .is_err_and(|s| {
                s.code() != Code::NotFound && s.get_error_details().error_info().is_none()
            }),
    };
    assert!(
        refused,
        "a certificate from another CA must not get through"
    );
    // Nor does a client without any certificate.
    let refused = match tls::connect(server.address, &setup.pki.ca_pem, None).await {
        Err(_) => true,
        Ok(mut client) => client
            .get_offering(proto::GetOfferingRequest {
                offering_id: "deal".into(),
            })
            .await
            .is_err_and(|s| {
                s.code() != Code::NotFound && s.get_error_details().error_info().is_none()
            }),
    };
    assert!(refused, "mutual TLS requires a client certificate");
}

/// The actor is stored with each entry and read back through any replica; a request_id
/// replayed by another principal is refused, by the principal that made it replayed.
async fn actors_are_recorded_through_three_replicas(db: TestDb) {
    let setup = Setup::new();
    let servers = [
        setup.start(&db).await,
        setup.start(&db).await,
        setup.start(&db).await,
    ];
    let operator = setup.principal("operator");
    let subscriber = setup.principal("subscriber");
    let mut operator_client = setup.client(&servers[0], &operator.certificate).await;
    operator_client
        .create_offering(offering("deal", 1000, 0))
        .await
        .unwrap();
    // The subscriber by token on replica 2, by certificate on replica 3.
    let mut by_token = setup.client(&servers[1], &setup.stranger).await;
    let token = Some(subscriber.token.as_str());
    by_token
        .subscribe(with_token(subscribe("deal", "alice", 5, "s1"), token))
        .await
        .unwrap();
    let mut by_certificate = setup.client(&servers[2], &subscriber.certificate).await;
    by_certificate
        .subscribe(subscribe("deal", "bob", 7, "s2"))
        .await
        .unwrap();
    operator_client
        .subscribe(subscribe("deal", "carol", 1, "s3"))
        .await
        .unwrap();

    let history = common::full_history(&mut by_certificate, "deal").await;
    let actors: Vec<&str> = history.iter().map(|e| e.actor.as_str()).collect();
    assert_eq!(actors, ["operator", "subscriber", "subscriber", "operator"]);

    // Another principal cannot read (or redo) the subscriber's call by its request_id.
    assert_status(
        operator_client
            .subscribe(subscribe("deal", "alice", 5, "s1"))
            .await,
        Code::FailedPrecondition,
        "REQUEST_ID_REUSED",
    );
    let mut create_again = offering("deal", 1000, 0);
    create_again.request_id = "create-deal".into();
    let mut reader_by_token = setup.client(&servers[1], &setup.stranger).await;
    let subscriber_create = reader_by_token
        .create_offering(with_token(create_again, token))
        .await;
    assert_status(
        subscriber_create,
        Code::PermissionDenied,
        "PERMISSION_DENIED",
    );
    // The principal that made it gets a replay, on any replica.
    let replay = by_certificate
        .subscribe(subscribe("deal", "alice", 5, "s1"))
        .await
        .unwrap()
        .into_inner();
    assert!(replay.replayed);
    assert_eq!(replay.entry.unwrap().actor, "subscriber");

    let mine = by_certificate
        .list_history(proto::ListHistoryRequest {
            offering_id: "deal".into(),
            actor: "subscriber".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        mine.entries.iter().map(|e| e.sequence).collect::<Vec<_>>(),
        [2, 3]
    );
    common::assert_ledger_consistent(&mut operator_client, "deal").await;
}

backend_tests!(
    every_rpc_by_every_role_by_token_and_by_certificate,
    token_and_certificate_must_agree,
    a_certificate_from_another_ca_fails_the_handshake,
    actors_are_recorded_through_three_replicas,
);
