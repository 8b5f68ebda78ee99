//! PostgreSQL URLs as libpq reads them, which sqlx does not: several hosts
//! (`postgres://user@h1:5432,h2:5433/db`), `target_session_attrs` and `connect_timeout`.
//!
//! Each host becomes a single-host URL that sqlx parses itself, so that everything else (the
//! password, sslmode, PGPASSWORD, and the PGPASSFILE line of that very host) works as it does
//! for one host. Nothing here ever prints a password: hosts are named `host:port`.

use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::PgConnectOptions;

/// How long a connection attempt to one host of a multi-host URL may take (libpq's
/// `connect_timeout`) unless the URL says otherwise: a dead or blackholed host must not hold up
/// the search for the primary.
pub const MULTI_HOST_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// The same for a single-host URL, whose only host has nowhere else to send the caller.
pub const SINGLE_HOST_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// What a URL names: the hosts, in the order they are tried, and what a session must be.
#[derive(Clone, Debug)]
pub struct PgTargets {
    pub hosts: Vec<PgHost>,
    /// A session is used only if it may write (`transaction_read_only` off, so not in
    /// recovery either): always for several hosts, or when the URL asks for it.
    pub require_writable: bool,
    pub connect_timeout: Duration,
}

#[derive(Clone, Debug)]
pub struct PgHost {
    /// `host:port`, for logs, errors and metrics.
    pub label: String,
    pub options: PgConnectOptions,
}

#[derive(Debug, thiserror::Error)]
pub enum UrlError {
    #[error("the database URL is not postgres://... (its scheme is {0:?})")]
    Scheme(String),
    #[error("host {0:?} of the database URL: {1}")]
    Host(String, String),
    #[error(
        "target_session_attrs={0}: subledger writes, so it needs read-write (or primary, which it treats as read-write)"
    )]
    SessionAttrs(String),
    #[error("connect_timeout={0:?} is not a whole number of seconds")]
    ConnectTimeout(String),
    #[error("the database URL: {0}")]
    Invalid(String),
}

impl PgTargets {
    /// `host:port` of every host, comma-separated, then the database: for logs.
    pub fn describe(&self) -> String {
        let hosts: Vec<&str> = self.hosts.iter().map(|h| h.label.as_str()).collect();
        let database = self.hosts[0].options.get_database().unwrap_or("");
        format!("{}/{database}", hosts.join(","))
    }
}

impl FromStr for PgTargets {
    type Err = UrlError;

    fn from_str(url: &str) -> Result<Self, UrlError> {
        let (scheme, rest) = url
            .split_once("://")
            .filter(|(scheme, _)| matches!(*scheme, "postgres" | "postgresql"))
            .ok_or_else(|| UrlError::Scheme(scheme_of(url).to_owned()))?;
        let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        let (authority, tail) = rest.split_at(authority_end);
        let (userinfo, host_list) = match authority.rfind('@') {
            Some(at) => (&authority[..=at], &authority[at + 1..]),
            None => ("", authority),
        };
        let (tail, attrs, connect_timeout) = take_own_parameters(tail)?;
        let specs: Vec<&str> = host_list.split(',').collect();
        let several = specs.len() > 1;
        let require_writable = match attrs.as_deref() {
            None => several,
            Some("read-write" | "primary") => true,
            // libpq's default, kept for one host so that a single-host URL means what it did.
            Some("any") if !several => false,
            Some(other) => return Err(UrlError::SessionAttrs(other.to_owned())),
        };
        let hosts = specs
            .iter()
            .map(|spec| {
                if several && spec.is_empty() {
                    return Err(UrlError::Host(String::new(), "empty host name".into()));
                }
                check_port(spec)?;
                let single = format!("{scheme}://{userinfo}{spec}{tail}");
                let options = PgConnectOptions::from_str(&single)
                    // sqlx's message names the problem, never the URL.
                    .map_err(|e| UrlError::Host((*spec).to_owned(), e.to_string()))?;
                let label = format!("{}:{}", options.get_host(), options.get_port());
                Ok(PgHost { label, options })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let connect_timeout = connect_timeout.unwrap_or(if several {
            MULTI_HOST_CONNECT_TIMEOUT
        } else {
            SINGLE_HOST_CONNECT_TIMEOUT
        });
        Ok(Self {
            hosts,
            require_writable,
            connect_timeout,
        })
    }
}

/// What comes before "://": all of a URL an error may show.
fn scheme_of(url: &str) -> &str {
    url.split_once("://").map_or("", |(scheme, _)| scheme)
}

/// A port must be a number: sqlx's own message for a bad one ("invalid port number") does not
/// say which host had it.
fn check_port(spec: &str) -> Result<(), UrlError> {
    let port = match spec.strip_prefix('[') {
        Some(v6) => v6.split_once(']').and_then(|(_, p)| p.strip_prefix(':')),
        None => spec.split_once(':').map(|(_, p)| p),
    };
    match port {
        Some(port) if port.parse::<u16>().is_err() => Err(UrlError::Host(
            spec.to_owned(),
            format!("port {port:?} is not a number from 0 to 65535"),
        )),
        _ => Ok(()),
    }
}

/// Removes target_session_attrs and connect_timeout from the URL's query (sqlx would ignore
/// them with a warning) and returns them; every other parameter stays as written.
#[allow(clippy::type_complexity)]
fn take_own_parameters(tail: &str) -> Result<(String, Option<String>, Option<Duration>), UrlError> {
    let (path, query) = match tail.split_once('?') {
        Some((path, query)) => (path, query),
        None => return Ok((tail.to_owned(), None, None)),
    };
    let (mut attrs, mut timeout) = (None, None);
    let mut kept = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        match key {
            "target_session_attrs" => attrs = Some(value.to_owned()),
            "connect_timeout" => {
                let seconds: u64 = value
                    .parse()
                    .map_err(|_| UrlError::ConnectTimeout(value.to_owned()))?;
                // libpq: zero means forever, and anything under 2 s means 2 s.
                timeout = (seconds > 0).then(|| Duration::from_secs(seconds.max(2)));
            }
            _ => kept.push(pair),
        }
    }
    let tail = if kept.is_empty() {
        path.to_owned()
    } else {
        format!("{path}?{}", kept.join("&"))
    };
    Ok((tail, attrs, timeout))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(targets: &PgTargets) -> Vec<&str> {
        targets.hosts.iter().map(|h| h.label.as_str()).collect()
    }

    #[test]
    fn several_hosts_in_order_default_to_read_write_and_a_short_connect_timeout() {
        let t: PgTargets =
            "postgres://app:secret@h1:5432,h2:5433,[::1]:6000/ledger?sslmode=disable"
                .parse()
                .unwrap();
        assert_eq!(labels(&t), ["h1:5432", "h2:5433", "[::1]:6000"]);
        assert!(t.require_writable);
        assert_eq!(t.connect_timeout, MULTI_HOST_CONNECT_TIMEOUT);
        for host in &t.hosts {
            assert_eq!(host.options.get_username(), "app");
            assert_eq!(host.options.get_database(), Some("ledger"));
        }
        assert_eq!(t.describe(), "h1:5432,h2:5433,[::1]:6000/ledger");
    }

    #[test]
    fn a_missing_port_is_the_default_one() {
        let t: PgTargets = "postgresql://u@a,b:7/db".parse().unwrap();
        assert_eq!(labels(&t), ["a:5432", "b:7"]);
    }

    #[test]
    fn one_host_means_what_it_did_unless_the_url_asks_for_a_writer() {
        let t: PgTargets = "postgres://u@h/db".parse().unwrap();
        assert!(!t.require_writable);
        assert_eq!(t.connect_timeout, SINGLE_HOST_CONNECT_TIMEOUT);
        let t: PgTargets = "postgres://u@h/db?target_session_attrs=any"
            .parse()
            .unwrap();
        assert!(!t.require_writable);
        let t: PgTargets = "postgres://u@h/db?target_session_attrs=read-write&connect_timeout=7"
            .parse()
            .unwrap();
        assert!(t.require_writable);
        assert_eq!(t.connect_timeout, Duration::from_secs(7));
    }

    #[test]
    fn primary_is_read_write_and_standby_modes_are_refused() {
        let t: PgTargets = "postgres://u@a,b/db?target_session_attrs=primary"
            .parse()
            .unwrap();
        assert!(t.require_writable);
        for mode in ["any", "read-only", "standby", "prefer-standby"] {
            let url = format!("postgres://u@a,b/db?target_session_attrs={mode}");
            let error = url.parse::<PgTargets>().unwrap_err().to_string();
            assert!(
                error.contains(mode) && error.contains("read-write"),
                "{error}"
            );
        }
    }

    #[test]
    fn errors_name_the_host_never_the_password() {
        for url in [
            "postgres://u:topsecret@h1:5432,h2:x/db",
            "postgres://u:topsecret@h1:99999/db",
            "postgres://u:topsecret@h1,/db",
            "postgres://u:topsecret@h1/db?connect_timeout=soon",
            "mysql://u:topsecret@h1/db",
            "POSTGRES://u:topsecret@h1/db",
        ] {
            let error = url.parse::<PgTargets>().unwrap_err().to_string();
            assert!(!error.contains("topsecret"), "{url}: {error}");
        }
        let error = "postgres://u:p@h1:5432,h2:x/db"
            .parse::<PgTargets>()
            .unwrap_err()
            .to_string();
        assert!(error.contains("\"h2:x\""), "{error}");
    }

    #[test]
    fn other_parameters_reach_every_host() {
        let t: PgTargets =
            "postgres://u@a,b/db?application_name=ledger&target_session_attrs=read-write&connect_timeout=0"
                .parse()
                .unwrap();
        // connect_timeout=0 is libpq's "forever": the default bound applies instead.
        assert_eq!(t.connect_timeout, MULTI_HOST_CONNECT_TIMEOUT);
        for host in &t.hosts {
            assert_eq!(host.options.get_application_name(), Some("ledger"));
        }
    }
}
